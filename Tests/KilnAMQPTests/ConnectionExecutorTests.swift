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
        let queue = "kiln-test-executor-\(UUID().uuidString.prefix(8))"
        try await connection.declare(AMQPTopology(queues: [.init(name: queue, durable: false)]))
        let (threads, received) = try await withTimeout(.seconds(20)) {
            try await withTaskExecutorPreference(connection.executor) {
                var threads = Set<String>()
                for index in 0..<50 {
                    try await connection.publish(AMQPMessage(exchange: "", routingKey: queue, body: [UInt8(index)]))
                    threads.insert(currentThreadName())
                }
                var received: [UInt8] = []
                for try await delivery in try await connection.consume(queue: queue, prefetch: 1) {
                    threads.insert(currentThreadName())
                    received.append(delivery.body[0])
                    try delivery.ack()
                    if received.count == 50 { break }
                }
                return (threads, received)
            }
        }
        #expect(threads == ["kiln-amqp"], "the task ran on \(threads)")
        #expect(received == Array(0..<50))
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func afterCloseItsTasksRunOnTheGlobalExecutor() async throws {
        let connection = try await TestBroker.connect("executor-closed")
        await connection.close()
        let thread = try await withTimeout(.seconds(10)) {
            await withTaskExecutorPreference(connection.executor) {
                await Task.yield()
                return currentThreadName()
            }
        }
        #expect(thread != "kiln-amqp" && thread != "?", "ran on \(thread)")
    }

    /// Commands queued together run in one batch on the connection's thread; a failing one (a
    /// declare the broker refuses, closing the channel) must not take the rest of the batch with it.
    @Test func aFailingCommandDoesNotDropTheOthersQueuedWithIt() async throws {
        let connection = try await TestBroker.connect("executor-batch")
        let queue = "kiln-test-batch-\(UUID().uuidString.prefix(8))"
        try await connection.declare(AMQPTopology(queues: [.init(name: queue, durable: false)]))
        try await withTimeout(.seconds(20)) {
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

/// The calling thread's name, as the kernel keeps it (at most 15 bytes).
private func currentThreadName() -> String {
    let name = try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
    return name?.trimmingCharacters(in: .newlines) ?? "?"
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
