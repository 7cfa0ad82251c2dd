import Foundation
import KilnAMQP
import KilnTestSupport
import KilnWire
import Synchronization
import Testing

/// The client against the broker `make test` starts.
@Suite("AMQP client")
struct ClientTests {
    @Test func invocationRoundTripThroughTheKilnTopology() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("round-trip")
        try await connection.declare(.kiln(names))
        let consumer = try await connection.consume(queue: names.invocationsQueue, prefetch: 10)

        let invocation = Invocation(id: "rt-1", method: "echo", args: ["x": 1])
        let body = try MessagePackEncoder().encode(invocation)
        try await connection.publish(AMQPMessage(
            exchange: names.invokeExchange, routingKey: "echo", body: body,
            properties: .msgpack(messageID: "rt-1", headers: ["x-trace": "abc", "n": 7])))

        let delivery = try #require(try await consumer.take(1).first)
        #expect(delivery.routingKey == "echo")
        #expect(delivery.exchange == names.invokeExchange)
        #expect(!delivery.redelivered)
        #expect(delivery.properties.contentType == "application/msgpack")
        #expect(delivery.properties.messageID == "rt-1")
        #expect(delivery.properties.deliveryMode == 2)
        #expect(delivery.properties.headers["x-trace"] == "abc")
        #expect(delivery.properties.headers["n"] == 7)
        let decoded = try delivery.body.withUnsafeBytes { try Invocation.decode(body: $0, messageID: delivery.properties.messageID) }
        #expect(decoded == invocation)
        try delivery.ack()

        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close()
    }

    /// A routing key of 5,000 bytes once made rabbitmq-c fail the publish on the connection's
    /// thread, which reconnected and tried the same publish again, for ever.
    @Test func aMessageAMQPCannotCarryFailsAtOnceAndTheConnectionCarriesOn() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("invalid-message")
        try await connection.declare(.kiln(names))
        let long = String(repeating: "m", count: 5_000)
        let refused: [AMQPMessage] = [
            AMQPMessage(exchange: names.invokeExchange, routingKey: long, body: [1]),
            AMQPMessage(exchange: long, routingKey: "m", body: [2]),
            AMQPMessage(exchange: names.invokeExchange, routingKey: "m", body: [3], properties: .msgpack(messageID: long)),
            AMQPMessage(exchange: names.invokeExchange, routingKey: "m", body: [4], properties: .msgpack(headers: [long: 1])),
            AMQPMessage(exchange: names.invokeExchange, routingKey: "m", body: [5], properties: .msgpack(
                headers: ["big": .string(String(repeating: "h", count: 200_000))])),
        ]
        for message in refused {
            await #expect(throws: AMQPError.self) { try await connection.publish(message) }
            do {
                try await connection.publish(message)
            } catch AMQPError.invalidMessage(let reason) {
                #expect(reason.contains("255") || reason.contains("65536"), "\(reason)")
            }
        }
        #expect(AMQPMessage(exchange: "x", routingKey: String(repeating: "k", count: 255), body: []).validateSucceeds)
        // The connection was never dropped, and still publishes.
        try await connection.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "m", body: [9]))
        #expect(connection.connectionCount == 1)
        let consumer = try await connection.consume(queue: names.invocationsQueue, prefetch: 10)
        let delivered = try await consumer.take(1)
        #expect(delivered.map(\.body) == [[9]])
        for delivery in delivered { try delivery.ack() }
        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close()
    }

    @Test func confirmedPublishesArriveInOrder() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("confirms", publishWindow: 64)
        try await connection.declare(.kiln(names))
        let count = 500
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                group.addTask {
                    try await connection.publish(AMQPMessage(
                        exchange: names.invokeExchange, routingKey: "m", body: Array("\(index)".utf8)))
                }
            }
            try await group.waitForAll()
        }
        let consumer = try await connection.consume(queue: names.invocationsQueue, prefetch: 1_000)
        let deliveries = try await consumer.take(count)
        #expect(Set(deliveries.map { String(decoding: $0.body, as: UTF8.self) }).count == count)
        for delivery in deliveries { try delivery.ack() }
        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close()
    }

    @Test func unroutableMandatoryMessageFails() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("mandatory")
        try await connection.declare(AMQPTopology(exchanges: [.init(name: names.resultsExchange, type: .topic, autoDelete: true)]))
        await #expect(throws: AMQPError.unroutable(exchange: names.resultsExchange, routingKey: "nobody.listens", code: 312, text: "NO_ROUTE")) {
            try await connection.publish(AMQPMessage(
                exchange: names.resultsExchange, routingKey: "nobody.listens", body: [1], mandatory: true))
        }
        // Without `mandatory` the broker drops it and confirms.
        try await connection.publish(AMQPMessage(exchange: names.resultsExchange, routingKey: "nobody.listens", body: [1]))
        try await connection.deleteExchange(names.resultsExchange)
        await connection.close()
    }

    @Test func missingExchangeIsATypedErrorAndTheConnectionCarriesOn() async throws {
        let connection = try await TestBroker.connect("missing-exchange")
        let missing = "kiln-test-missing-\(UUID().uuidString.prefix(8))"
        await #expect(throws: AMQPError.channelClosed(code: 404, text: "NOT_FOUND - no exchange '\(missing)' in vhost '/'")) {
            try await connection.publish(AMQPMessage(exchange: missing, routingKey: "x", body: [1]))
        }
        // The channel was reopened: the default exchange still takes messages.
        let names = TestBroker.uniqueNames()
        try await connection.declare(AMQPTopology(queues: [.init(name: names.deadQueue, durable: false, autoDelete: true)]))
        try await connection.publish(AMQPMessage(exchange: "", routingKey: names.deadQueue, body: [2]))
        await connection.close()
    }

    @Test func badCredentialsAreRefused() async throws {
        var configuration = try TestBroker.configuration("bad-credentials")
        configuration.password = "wrong"
        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        await #expect(throws: AMQPError.accessRefused(
            "403 ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.")) {
            try await connection.connect()
        }
    }

    @Test func unreachableBrokerFailsFast() async throws {
        var configuration = try TestBroker.configuration("unreachable", url: "amqp://127.0.0.1:1")
        configuration.connectTimeout = .seconds(2)
        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        // Refused, not timed out: the worker learns at once that nothing listens there.
        do {
            try await connection.connect()
            Issue.record("connected to a port where nothing listens")
        } catch let error as AMQPError {
            guard case .connectFailed(_, let port, let reason) = error else {
                Issue.record("expected connectFailed, got \(error)")
                return
            }
            #expect(port == 1)
            #expect(!reason.lowercased().contains("timed out"), "\(reason)")
        }
    }

    @Test func tlsToAPlainPortFailsWithATypedError() async throws {
        var configuration = try TestBroker.configuration("tls-mismatch")
        configuration.tls = .init(verifyPeer: false, verifyHostname: false)
        configuration.handshakeTimeout = .seconds(3)
        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        do {
            try await connection.connect()
            Issue.record("a TLS handshake with a plain AMQP port succeeded")
        } catch let error as AMQPError {
            guard case .connectFailed = error else {
                Issue.record("expected connectFailed, got \(error)")
                return
            }
        }
        var missingCA = configuration
        missingCA.tls?.caFile = "/nonexistent/ca.pem"
        await #expect(throws: AMQPError.tlsConfiguration("cannot read the CA file /nonexistent/ca.pem")) {
            try await AMQPConnection(configuration: missingCA, logger: TestBroker.logger).connect()
        }
    }

    @Test func prefetchIsHonoured() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("prefetch")
        try await connection.declare(.kiln(names))
        for index in 0..<10 {
            try await connection.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "m", body: [UInt8(index)]))
        }
        let consumer = try await connection.consume(queue: names.invocationsQueue, prefetch: 3)
        var iterator = consumer.makeAsyncIterator()
        var held: [AMQPDelivery] = []
        for _ in 0..<3 { held.append(try #require(try await iterator.next())) }
        #expect(held.map(\.body) == [[0], [1], [2]])
        // The broker holds back the other seven while three are unsettled (without the limit it
        // sends all ten at once), once its statistics have caught up with the three.
        let counts = try await BrokerAdmin.queueCounts(names.invocationsQueue) { $0.ready + $0.unacknowledged == 10 && $0.unacknowledged >= 3 }
        #expect(counts?.unacknowledged == 3 && counts?.ready == 7, "\(String(describing: counts))")
        try held[0].ack()
        let fourth = try #require(try await iterator.next())
        #expect(fourth.body == [3])
        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close(grace: .zero)
    }

    @Test func rejectedAndDeadLetteredMessagesReachTheDeadQueue() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("dead-letter")
        try await connection.declare(.kiln(names))
        let consumer = try await connection.consume(queue: names.invocationsQueue, prefetch: 10)
        try await connection.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "bad", body: [0xc1]))
        try await connection.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "poison", body: [0x80]))
        let deliveries = try await consumer.take(2)

        // A body Kiln cannot read: a copy with the reason goes to kiln.dead, then the ack.
        try await connection.deadLetter(deliveries[0], reason: "invalid byte 0xc1 at offset 0", exchange: names.deadExchange)
        try deliveries[0].ack()
        // A plain reject without requeue goes through the queue's dead-letter exchange.
        try deliveries[1].reject(requeue: false)

        let dead = AMQPConnection(configuration: try TestBroker.configuration("dead-reader"), logger: TestBroker.logger)
        try await dead.connect()
        let deadLetters = try await dead.consume(queue: names.deadQueue, prefetch: 10).take(2)
        let byKey = Dictionary(uniqueKeysWithValues: deadLetters.map { ($0.routingKey, $0) })
        let copied = try #require(byKey["bad"])
        #expect(copied.body == [0xc1])
        #expect(copied.properties.headers[KilnNames.errorHeader] == "invalid byte 0xc1 at offset 0")
        #expect(copied.properties.headers["x-kiln-original-exchange"] == .string(names.invokeExchange))
        let rejected = try #require(byKey["poison"])
        guard case .array(let deaths) = rejected.properties.headers["x-death"],
              case .table(let death) = deaths.first else {
            Issue.record("no x-death header on the rejected message: \(rejected.properties.headers)")
            return
        }
        #expect(death["reason"] == "rejected")
        #expect(death["queue"] == .string(names.invocationsQueue))
        for letter in deadLetters { try letter.ack() }

        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await dead.close()
        await connection.close()
    }

    @Test func closeLetsInFlightWorkFinishWithinTheGracePeriod() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("graceful-close")
        try await connection.declare(.kiln(names))
        for index in 0..<3 {
            try await connection.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "m", body: [UInt8(index)]))
        }
        let deliveries = try await connection.consume(queue: names.invocationsQueue, prefetch: 3).take(3)
        // A grace far beyond anything this test takes: a close that waited it out instead of
        // ending when the last delivery was settled shows as taking half of it.
        let grace = Duration.seconds(600)
        let started = ContinuousClock.now
        let closed = Mutex(false)
        let closing = Task {
            await connection.close(grace: grace)
            closed.withLock { $0 = true }
        }
        // The consumer is cancelled at once (the broker shows it gone), but the three in flight
        // may still be settled: close is waiting for them.
        let cancelled = try await BrokerAdmin.queueCounts(names.invocationsQueue) { $0.consumers == 0 }
        #expect(cancelled?.consumers == 0, "\(String(describing: cancelled))")
        #expect(!closed.withLock { $0 }, "close ended with three deliveries unsettled")
        for delivery in deliveries { try delivery.ack() }
        await closing.value
        let took = ContinuousClock.now - started
        #expect(took < grace / 2, "close waited \(took) although nothing was in flight any more")

        // Acked, not requeued: the queue is empty.
        let check = try await TestBroker.connect("graceful-close-check")
        let leftovers = try await check.consume(queue: names.invocationsQueue, prefetch: 10)
        await #expect(throws: TestTimeout.self) { _ = try await leftovers.take(1, within: .milliseconds(500)) }
        try await check.deleteQueue(names.invocationsQueue)
        try await check.deleteQueue(names.deadQueue)
        await check.close(grace: .zero)
    }

    @Test func settlingAfterCloseFails() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("settle-after-close")
        try await connection.declare(AMQPTopology(queues: [.init(name: names.deadQueue, durable: false, autoDelete: true)]))
        try await connection.publish(AMQPMessage(exchange: "", routingKey: names.deadQueue, body: [1]))
        let delivery = try #require(try await connection.consume(queue: names.deadQueue, prefetch: 1).take(1).first)
        await connection.close(grace: .milliseconds(100))
        #expect(throws: AMQPError.self) { try delivery.ack() }
    }
}

extension AMQPMessage {
    var validateSucceeds: Bool { (try? validate()) != nil }
}
