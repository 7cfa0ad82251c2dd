import Foundation
import KilnAMQP
import KilnWire
import Logging

/// The producer side: publishes invocations with a reply queue and reads their results.
final class BenchClient: Sendable {
    let names: KilnNames
    let method: String
    /// The invocations' args.
    let args: MessagePackValue
    let publisher: AMQPConnection
    let replies: AMQPConnection
    let replyQueue: String
    let results: AsyncThrowingStream<InvocationResult, any Error>

    init(url: String, names: KilnNames, method: String, args: MessagePackValue = .map([])) async throws {
        self.names = names
        self.method = method
        self.args = args
        var configuration = try AMQPConfiguration(url: url)
        let logger = Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() }
        configuration.connectionName = "kiln-bench e2e producer"
        publisher = AMQPConnection(configuration: configuration, publishWindow: 1_000, logger: logger)
        try await publisher.connect()
        try await publisher.declare(.kiln(names))
        configuration.connectionName = "kiln-bench e2e replies"
        replies = AMQPConnection(configuration: configuration, logger: logger)
        try await replies.connect()
        replyQueue = "\(names.prefix).bench-replies.\(method)"
        try await replies.declare(AMQPTopology(queues: [.init(name: replyQueue, durable: false, exclusive: true, autoDelete: true)]))
        let consumer = try await replies.consume(queue: replyQueue, prefetch: 1_000)
        let decoder = MessagePackDecoder()
        results = AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await delivery in consumer {
                        try delivery.ack()
                        continuation.yield(try decoder.decode(InvocationResult.self, from: delivery.body))
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func submit(_ id: String) async throws {
        let invocation = Invocation(id: id, method: method, args: args, submittedAtUs: UInt64(Date().timeIntervalSince1970 * 1e6))
        try await publisher.publish(AMQPMessage(
            exchange: names.invokeExchange, routingKey: method, body: try MessagePackEncoder().encode(invocation),
            properties: .msgpack(messageID: id, correlationID: id, replyTo: replyQueue)))
    }

    /// One invocation, submitted and waited for: microseconds from submit to result, and the
    /// result. The broker's confirm of the submit is awaited too, but not timed: a producer
    /// that waits for results need not wait for the confirm first.
    func roundTrip() async throws -> (Double, InvocationResult) {
        let id = UUID().uuidString
        let start = ContinuousClock.now
        async let confirmed: Void = submit(id)
        for try await result in results where result.id == id {
            let elapsed = (ContinuousClock.now - start).microseconds
            try await confirmed
            guard result.status == .ok else { throw BenchmarkError("\(method) came back \(result.status.rawValue): \(result.error?.message ?? "")") }
            return (elapsed, result)
        }
        throw BenchmarkError("the reply queue closed")
    }

    /// `count` invocations submitted at once: seconds from the first submit to the last result.
    func burst(_ count: Int) async throws -> (Double, [InvocationResult]) {
        let ids = (0..<count).map { _ in UUID().uuidString }
        let start = ContinuousClock.now
        let submitting = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<min(256, count) {
                    group.addTask {
                        for index in stride(from: lane, to: count, by: 256) { try await self.submit(ids[index]) }
                    }
                }
                try await group.waitForAll()
            }
        }
        var pending = Set(ids)
        var collected: [InvocationResult] = []
        collected.reserveCapacity(count)
        for try await result in results where pending.remove(result.id) != nil {
            guard result.status == .ok else { throw BenchmarkError("\(method) came back \(result.status.rawValue): \(result.error?.message ?? "")") }
            collected.append(result)
            if pending.isEmpty { break }
        }
        try await submitting.value
        guard pending.isEmpty else { throw BenchmarkError("\(pending.count) of \(count) results did not come back") }
        return ((ContinuousClock.now - start).seconds, collected)
    }

    func close() async {
        await replies.close(grace: .zero)
        await publisher.close(grace: .seconds(1))
    }
}
