import Foundation
import KilnAMQP
import Synchronization
import Testing

/// Tasks on a connection's own thread (`AMQPConnectionExecutor`), against the broker `make test`
/// starts.
@Suite("AMQP connection executor")
struct ConnectionExecutorTests {
    @Test func aTaskOnTheConnectionsThreadPublishesAndConsumesThere() async throws {
        let connection = try await TestBroker.connect("executor", publishWindow: 1)
        let other = try await TestBroker.connect("executor-other")
        let queue = "kiln-test-executor-\(UUID().uuidString.prefix(8))"
        try await connection.declare(AMQPTopology(queues: [.init(name: queue, durable: false)]))
        let (threads, received) = try await withTimeout(.seconds(120)) {
            try await withTaskExecutorPreference(connection.executor) {
                var threads = Set<String>()
                for index in 0..<50 {
                    try await connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: [UInt8(index)]))
                    threads.insert(currentThread())
                }
                var received: [UInt8] = []
                for try await delivery in try await connection.consume(queue: queue, prefetch: 1) {
                    threads.insert(currentThread())
                    received.append(delivery.body[0])
                    try delivery.ack()
                    if received.count == 50 { break }
                }
                return (threads, received)
            }
        }
        let otherThread = try await withTimeout(.seconds(120)) {
            await withTaskExecutorPreference(other.executor) {
                await Task.yield()
                return currentThread()
            }
        }
        #expect(threads.count == 1 && threads.first?.hasSuffix(" kiln-amqp") == true, "the task ran on \(threads)")
        #expect(otherThread.hasSuffix(" kiln-amqp") && !threads.contains(otherThread), "\(otherThread), \(threads)")
        #expect(received == Array(0..<50))
        try await connection.deleteQueue(queue)
        await connection.close()
        await other.close()
    }

    @Test func beforeConnectAndAfterCloseItsTasksRunOnTheGlobalExecutor() async throws {
        let connection = AMQPConnection(configuration: try TestBroker.configuration("executor-lifetime"), logger: TestBroker.logger)
        let connectedFrom = try await withTimeout(.seconds(120)) {
            try await withTaskExecutorPreference(connection.executor) {
                let thread = currentThread()
                try await connection.connect()
                return thread
            }
        }
        #expect(!connectedFrom.hasSuffix(" kiln-amqp"), "ran on \(connectedFrom)")
        await connection.close()
        let thread = try await withTimeout(.seconds(120)) {
            await withTaskExecutorPreference(connection.executor) {
                await Task.yield()
                return currentThread()
            }
        }
        #expect(!thread.hasSuffix(" kiln-amqp") && !thread.isEmpty, "ran on \(thread)")
    }

    /// Commands queued together run in one batch on the connection's thread; a failing one (a
    /// declare the broker refuses, closing the channel) must not take the rest of the batch with it.
    @Test func aFailingCommandDoesNotDropTheOthersQueuedWithIt() async throws {
        let connection = try await TestBroker.connect("executor-batch")
        let queue = "kiln-test-batch-\(UUID().uuidString.prefix(8))"
        try await connection.declare(AMQPTopology(queues: [.init(name: queue, durable: false)]))
        try await withTimeout(.seconds(120)) {
            try await withTaskExecutorPreference(connection.executor) {
                // Both children run in one pass of the thread, so both commands arrive together.
                async let refused: Void = connection.declare(AMQPTopology(queues: [.init(name: queue, durable: true)]))
                async let published: Void = connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: [7]))
                var refusal: (any Error)?
                do { try await refused } catch { refusal = error }
                #expect(refusal is AMQPError, "\(String(describing: refusal))")
                try await published
            }
        }
        let consumer = try await connection.consume(queue: queue, prefetch: 1)
        let delivery = try #require(try await consumer.take(1).first)
        #expect(delivery.body == [7])
        try delivery.ack()
        try await connection.deleteQueue(queue)
        await connection.close()
    }
}

extension ConnectionExecutorTests {
    /// An ack queued in the same batch as a command the broker refuses belongs to the channel the
    /// refusal closed: it must not be sent on the reopened one (the broker would close that too,
    /// failing the publishes in flight), and its delivery comes again.
    @Test func anAckBatchedWithARefusedCommandIsNotSentOnTheNextChannel() async throws {
        let connection = try await TestBroker.connect("executor-stale-ack")
        let queue = "kiln-test-stale-ack-\(UUID().uuidString.prefix(8))"
        try await connection.declare(AMQPTopology(queues: [.init(name: queue, durable: false)]))
        for body in [[1], [2], [3]] as [[UInt8]] {
            try await connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: body))
        }
        let consumer = try await connection.consume(queue: queue, prefetch: 10)
        let taken = try await consumer.take(3)
        // Settled before: only the third (delivery tag 3) is unacked when its channel closes, and
        // the reopened channel redelivers it as tag 1, so an ack of tag 3 there is a 406.
        try taken[0].ack()
        try taken[1].ack()
        // A confirmed publish after them: the thread has sent both acks (commands run in order).
        try await connection.publish(AMQPMessage(exchange: "", routingKey: "\(queue)-nobody", body: [0]))
        let first = taken[2]
        try await withTimeout(.seconds(120)) {
            try await withTaskExecutorPreference(connection.executor) {
                // Both children run in one pass; the ack, the declare and the publish they post
                // arrive together in the next.
                async let refused: Void = {
                    try first.ack()
                    try await connection.declare(AMQPTopology(queues: [.init(name: queue, durable: true)]))
                }()
                async let published: Void = connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: [4]))
                var refusal: (any Error)?
                do { try await refused } catch { refusal = error }
                #expect(refusal is AMQPError, "\(String(describing: refusal))")
                try await published
            }
        }
        let again = try await consumer.take(2)
        #expect(Set(again.map(\.body)) == [[3], [4]])
        #expect(again.first { $0.body == [3] }?.redelivered == true)
        for delivery in again { try delivery.ack() }
        try await connection.deleteQueue(queue)
        await connection.close()
    }
}

extension ConnectionExecutorTests {
    /// Two closes in one batch: both callers return.
    @Test func everyCallerOfCloseReturns() async throws {
        let connection = try await TestBroker.connect("executor-close-twice")
        try await withTimeout(.seconds(120)) {
            await withTaskExecutorPreference(connection.executor) {
                async let first: Void = connection.close(grace: .seconds(1))
                async let second: Void = connection.close(grace: .seconds(1))
                _ = await (first, second)
            }
        }
    }
}

/// The calling thread: its kernel id and name (at most 15 bytes), as `TID NAME`.
private func currentThread() -> String {
    let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? "?"
    let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?"
    return "\(path.split(separator: "/").last ?? "?") \(name.trimmingCharacters(in: .newlines))"
}

/// `body`'s value, or a ``TestTimeout`` when it takes longer than `limit`. A body that hangs is
/// left behind (a lost confirm cannot be cancelled), so the test fails instead of hanging.
private func withTimeout<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let answer = FirstAnswer<T>()
    return try await withCheckedThrowingContinuation { continuation in
        answer.wait(continuation)
        Task {
            do { answer.give(.success(try await body())) } catch { answer.give(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            answer.give(.failure(TestTimeout(description: "did not finish within \(limit)")))
        }
    }
}

/// Resumes a continuation with the first result given, once.
private final class FirstAnswer<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)

    func wait(_ continuation: CheckedContinuation<T, any Error>) {
        self.continuation.withLock { $0 = continuation }
    }

    func give(_ result: Result<T, any Error>) {
        continuation.withLock { $0.take() }?.resume(with: result)
    }
}
