import Foundation
import KilnAMQP
import KilnTestSupport
import KilnWire
import Testing

/// A worker as production runs it: over TLS with the broker's certificate verified, as the
/// least-privilege `kiln-worker` user (the permissions `deploy/rabbitmq/definitions.json`
/// ships), serving a producer that is the `kiln-producer` user, in a virtual host of their own.
/// The worker's password appears nowhere it reports: logs, status routes, results, telemetry.
@Suite("Secure broker", .serialized)
struct SecureBrokerTests {
    @Test(.timeLimit(.minutes(3)))
    func aWorkerOverTLSWithLeastPrivilegeServesAndNeverShowsItsPassword() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let tlsURL = environment["KILN_AMQP_TLS_URL"], let certificates = environment["KILN_TEST_TLS_DIR"] else {
            throw HarnessError("no TLS broker: KILN_AMQP_TLS_URL and KILN_TEST_TLS_DIR are unset (make test sets them; Tests/run-all.sh)")
        }
        let vhost = "kiln-secure-\(UUID().uuidString.prefix(8).lowercased())"
        let workerUser = "kiln-worker-\(vhost)"
        let producerUser = "kiln-producer-\(vhost)"
        let passwords = try BrokerAdmin.makeVirtualHost(vhost, users: [(workerUser, "kiln-worker"), (producerUser, "kiln-producer")])
        defer { BrokerAdmin.remove(vhost, users: [workerUser, producerUser]) }
        let secret = try #require(passwords[workerUser])
        let tls = try AMQPConfiguration(url: tlsURL)
        let plain = try AMQPConfiguration(url: WorkerProcess.brokerURL)

        let names = KilnNames(prefix: "kiln")
        let worker = try WorkerProcess(names: names, environment: [
            "KILN_VM_BACKEND": "process",
            "KILN_AMQP_URL": "amqps://\(workerUser):\(secret)@localhost:\(tls.port)/\(vhost)?cacertfile=\(certificates)/ca.pem",
        ])
        try await worker.waitUntilReady()

        // A tap on the telemetry, as guest (a producer may not read it).
        let observer = AMQPConnection(
            configuration: try AMQPConfiguration(url: "amqp://guest:guest@\(plain.host):\(plain.port)/\(vhost)"), logger: TestClient.logger)
        try await observer.connect()
        let tap = "tap.\(UUID().uuidString.prefix(6))"
        try await observer.declare(AMQPTopology(
            queues: [.init(name: tap, durable: false, exclusive: true, autoDelete: true)],
            bindings: [.init(queue: tap, exchange: names.telemetryExchange, routingKey: "#")]))
        let telemetry = try await observer.consume(queue: tap, prefetch: 100)

        // The producer: its own reply queue, invocations with reply_to.
        let producer = AMQPConnection(
            configuration: try AMQPConfiguration(url: "amqp://\(producerUser):\(passwords[producerUser]!)@\(plain.host):\(plain.port)/\(vhost)"),
            logger: TestClient.logger)
        try await producer.connect()
        let replies = "kiln-client.\(UUID().uuidString.prefix(8).lowercased())"
        try await producer.declare(AMQPTopology(queues: [.init(name: replies, durable: false, exclusive: true, autoDelete: true)]))
        let answers = try await producer.consume(queue: replies, prefetch: 10)
        let invocations = (0..<5).map { Invocation(id: "secure-\($0)", method: "echo", args: ["n": .uint(UInt64($0))]) }
        for invocation in invocations {
            try await producer.publish(AMQPMessage(
                exchange: names.invokeExchange, routingKey: invocation.method, body: try MessagePackEncoder().encode(invocation),
                properties: .msgpack(messageID: invocation.id, correlationID: invocation.id, replyTo: replies)))
        }
        var results: [InvocationResult] = []
        var iterator = answers.makeAsyncIterator()
        while results.count < invocations.count, let delivery = try await iterator.next() {
            try delivery.ack()
            #expect(!String(decoding: delivery.body, as: UTF8.self).contains(secret))
            results.append(try MessagePackDecoder().decode(InvocationResult.self, from: delivery.body))
        }
        #expect(Set(results.map(\.id)) == Set(invocations.map(\.id)))
        #expect(results.allSatisfy { $0.status == .ok })

        // The password is nowhere the worker reports.
        for route in ["/metrics", "/pool", "/healthz", "/model"] {
            #expect(!(try await worker.httpGet(route)).contains(secret), "\(route) shows the password")
        }
        var seen = 0
        var events = telemetry.makeAsyncIterator()
        while seen < 5, let event = try await events.next() {
            try event.ack()
            #expect(!String(decoding: event.body, as: UTF8.self).contains(secret))
            seen += 1
        }
        #expect(worker.stop() == 0)
        #expect(worker.logText.contains("amqps://\(workerUser)@localhost"), "the log names the broker, without the password")
        #expect(!worker.logText.contains(secret), "the log shows the password")
        await producer.close(grace: .zero)
        await observer.close(grace: .zero)
    }
}
