import ArgumentParser
import Foundation
import KilnAMQP
import KilnWire
import Logging

/// `kiln submit METHOD --args JSON [--wait]`.
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish an invocation; with --wait, print its result.")

    @OptionGroup var broker: BrokerOptions

    @Argument(help: "The method, as named in the worker's manifest.")
    var method: String

    @Option(help: "The method's input as JSON (bytes as {\"$bin\": \"<base64>\"}).")
    var args = "null"

    @Option(help: "Deadline in milliseconds; the manifest's default otherwise.")
    var deadlineMs: UInt64?

    @Option(help: "Affinity key: invocations with the same key prefer the same VM.")
    var affinity: String?

    @Option(help: "The invocation id; a new UUID by default.")
    var id: String?

    @Flag(help: "Wait for the result and print it.")
    var wait = false

    @Option(help: "Seconds to wait for the result.")
    var timeout: Double = 60

    func run() async throws {
        Kiln.bootstrapLogging()
        let (url, prefix) = try broker.endpoint()
        let names = KilnNames(prefix: prefix)
        let invocation = Invocation(
            id: id ?? UUID().uuidString.lowercased(), method: method, args: try JSONBridge.value(fromJSON: args),
            deadlineMs: deadlineMs, affinity: affinity.map { Affinity(key: $0) },
            submittedAtUs: UInt64(Date().timeIntervalSince1970 * 1_000_000))
        var configuration = try AMQPConfiguration(url: url)
        configuration.connectionName = "kiln submit"
        let connection = AMQPConnection(configuration: configuration, logger: Logger(label: "kiln.submit"))
        try await connection.connect()
        try await TopologyCheck.requireExchange(names.invokeExchange, on: connection, broker: configuration.redactedURL, prefix: prefix)

        var replies: AMQPConsumer?
        var replyQueue: String?
        if wait {
            let queue = "kiln-client.reply.\(invocation.id)"
            try await connection.declare(AMQPTopology(queues: [.init(name: queue, durable: false, exclusive: true, autoDelete: true)]))
            replies = try await connection.consume(queue: queue, prefetch: 1)
            replyQueue = queue
        }
        do {
            try await connection.publish(AMQPMessage(
                exchange: names.invokeExchange, routingKey: method, body: try MessagePackEncoder().encode(invocation),
                properties: .msgpack(messageID: invocation.id, correlationID: invocation.id, replyTo: replyQueue),
                mandatory: true))
        } catch AMQPError.unroutable {
            throw CommandFailure("no queue takes method \(method) from \(names.invokeExchange): the broker returned the invocation (is \(names.invocationsQueue) bound with '#'?)")
        }
        print("submitted \(invocation.id) (\(method))")

        if let replies {
            let result = try await firstResult(from: replies, id: invocation.id)
            print(ResultFormatter.detailed(result))
            if result.status != .ok { throw ExitCode(1) }
        }
        await connection.close(grace: .seconds(1))
    }

    private func firstResult(from replies: AMQPConsumer, id: String) async throws -> InvocationResult {
        try await withThrowingTaskGroup(of: InvocationResult?.self) { group in
            group.addTask {
                for try await delivery in replies {
                    try delivery.ack()
                    guard delivery.properties.correlationID == id else { continue }
                    return try MessagePackDecoder().decode(InvocationResult.self, from: delivery.body)
                }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: .seconds(timeout))
                return nil
            }
            defer { group.cancelAll() }
            guard let result = try await group.next() ?? nil else {
                throw CommandFailure("no result for \(id) within \(timeout) s: is a worker running?")
            }
            return result
        }
    }
}
