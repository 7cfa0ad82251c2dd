import Foundation
import KilnAMQP
import KilnTestSupport
import Testing

/// The least-privilege users of `deploy/rabbitmq/definitions.json`, with exactly the shipped
/// permissions, in a virtual host of their own on the test broker: each can do its job and
/// nothing more.
@Suite("Broker permissions", .serialized)
struct PermissionsTests {
    let vhost = "kiln-perm-\(UUID().uuidString.prefix(8).lowercased())"
    /// The topology's own names: the shipped patterns are for the `kiln` prefix.
    let names = KilnNames(prefix: "kiln")

    func connect(_ user: String, _ password: String, _ name: String) async throws -> AMQPConnection {
        let base = try AMQPConfiguration(url: TestBroker.url)
        var configuration = try AMQPConfiguration(
            url: "amqp://\(user):\(password)@\(base.host):\(base.port)/\(vhost)")
        configuration.connectionName = "kiln-test \(name)"
        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        try await connection.connect()
        return connection
    }

    /// Whether the broker refused `operation` on `connection` with 403.
    func refused(_ operation: () async throws -> Void) async -> String? {
        do {
            try await operation()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func theWorkerAndTheProducerCanDoTheirJobsAndNothingMore() async throws {
        let worker = "kiln-worker-\(vhost)"
        let producer = "kiln-producer-\(vhost)"
        let passwords = try BrokerAdmin.makeVirtualHost(vhost, users: [(worker, "kiln-worker"), (producer, "kiln-producer")])
        defer { BrokerAdmin.remove(vhost, users: [worker, producer]) }

        // The worker declares the topology, consumes invocations, publishes results, telemetry,
        // dead letters and replies.
        let asWorker = try await connect(worker, passwords[worker]!, "perm worker")
        try await asWorker.declare(.kiln(names))
        let asProducer = try await connect(producer, passwords[producer]!, "perm producer")
        let replies = "kiln-client.\(UUID().uuidString.prefix(8).lowercased())"
        try await asProducer.declare(AMQPTopology(
            queues: [.init(name: replies, durable: false, exclusive: true, autoDelete: true)],
            bindings: [.init(queue: replies, exchange: names.resultsExchange, routingKey: "#")]))
        // The producer publishes an invocation; the worker takes it.
        try await asProducer.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "echo", body: [1]))
        let invocations = try await asWorker.consume(queue: names.invocationsQueue, prefetch: 1)
        let invocation = try #require(try await invocations.take(1).first)
        #expect(invocation.body == [1])
        try invocation.ack()
        try await asWorker.publish(AMQPMessage(exchange: names.resultsExchange, routingKey: "echo.ok", body: [2]))
        try await asWorker.publish(AMQPMessage(exchange: names.telemetryExchange, routingKey: "vm.created.test", body: [3]))
        try await asWorker.publish(AMQPMessage(exchange: names.deadExchange, routingKey: "echo", body: [4]))
        try await asWorker.publish(AMQPMessage(exchange: "", routingKey: replies, body: [5], mandatory: true))
        // Cross-host affinity: its own queue on the consistent-hash exchange, a forward, the take.
        let affinity = try await connect(worker, passwords[worker]!, "perm worker affinity")
        try await affinity.declare(.crossHostAffinity(names, host: "perm-host", holdMs: 5_000))
        try await asWorker.publish(AMQPMessage(
            exchange: names.affinityExchange, routingKey: "echo", body: [6],
            properties: AMQPProperties(headers: [KilnNames.affinityHeader: "user-1"]), mandatory: true))
        let forwarded = try await affinity.consume(queue: names.workerQueue(host: "perm-host"), prefetch: 1).take(1)
        #expect(forwarded.map(\.body) == [[6]])
        for delivery in forwarded { try delivery.ack() }
        await affinity.close(grace: .zero)
        // The producer reads what came back: the result through kiln.results, and the reply.
        let answers = try await asProducer.consume(queue: replies, prefetch: 10).take(2)
        #expect(Set(answers.map(\.body)) == [[2], [5]])
        for answer in answers { try answer.ack() }

        // Nothing more. A producer cannot read the invocations, publish results or telemetry,
        // or change the topology.
        let other = try await connect(producer, passwords[producer]!, "perm producer overreach")
        let consumeInvocations = await refused { _ = try await other.consume(queue: names.invocationsQueue, prefetch: 1).take(1, within: .seconds(5)) }
        #expect(consumeInvocations?.contains("403") == true, "\(String(describing: consumeInvocations))")
        for exchange in [names.resultsExchange, names.telemetryExchange] {
            let publish = await refused { try await other.publish(AMQPMessage(exchange: exchange, routingKey: "x", body: [9])) }
            #expect(publish?.contains("403") == true, "publish to \(exchange): \(String(describing: publish))")
        }
        let declare = await refused { try await other.declare(AMQPTopology(queues: [.init(name: "kiln.mine")])) }
        #expect(declare?.contains("403") == true, "\(String(describing: declare))")
        // A worker cannot invoke: it does not publish to kiln.invoke.
        let invoke = await refused { try await asWorker.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "echo", body: [9])) }
        #expect(invoke?.contains("403") == true, "\(String(describing: invoke))")

        for connection in [asWorker, asProducer, other] { await connection.close(grace: .zero) }
    }
}
