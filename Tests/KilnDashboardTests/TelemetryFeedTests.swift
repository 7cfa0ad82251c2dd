import Foundation
import KilnAMQP
import KilnDashboard
import KilnTestSupport
import KilnWire
import Logging
import Testing

/// The dashboard's feed on a broker of the test's own, which it kills and starts again: the
/// feed waits for a worker to make the telemetry exchange, sees the broker go, reconnects by
/// itself, and events published after the restart reach the window.
@Suite("The dashboard's feed across a broker restart", .serialized)
struct TelemetryFeedTests {
    static let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }

    /// Polls `condition` every 50 ms for up to `seconds`.
    static func eventually(_ seconds: Int = 120, _ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<(seconds * 20) {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    /// Makes the telemetry exchange as a worker does.
    static func declareTelemetryExchange(names: KilnNames, url: String) async throws {
        let worker = AMQPConnection(configuration: try AMQPConfiguration(url: url), logger: logger)
        try await worker.connect()
        try await worker.declare(AMQPTopology(exchanges: [.init(name: names.telemetryExchange, type: .topic)]))
        await worker.close(grace: .seconds(1))
    }

    static func publish(_ event: TelemetryEvent, names: KilnNames, url: String) async throws {
        let publisher = AMQPConnection(configuration: try AMQPConfiguration(url: url), logger: logger)
        try await publisher.connect()
        try await publisher.publish(AMQPMessage(exchange: names.telemetryExchange, routingKey: event.routingKey,
                                                body: try MessagePackEncoder().encode(event)))
        await publisher.close(grace: .seconds(1))
    }

    @Test(.timeLimit(.minutes(5)))
    func theFeedGoesOnAfterTheBrokerRestarts() async throws {
        let cluster = try LocalCluster(size: 1)
        defer { cluster.remove() }
        try cluster.start()
        let url = cluster.urls[0]
        let names = KilnNames(prefix: "dashfeed-\(UUID().uuidString.prefix(6).lowercased())")
        let hub = DashboardHub(logger: Self.logger)
        let feed = TelemetryFeed(endpoints: [try AMQPConfiguration(url: url)], names: names, hub: hub, logger: Self.logger)
        let running = Task { try await feed.run() }
        defer { running.cancel() }
        #expect(try await Self.eventually { hub.snapshot().feed.connected })

        // No worker has made the exchange yet: the feed waits for one, then reads.
        #expect(!hub.snapshot().feed.reading)
        try await Self.declareTelemetryExchange(names: names, url: url)
        #expect(try await Self.eventually { hub.snapshot().feed.reading })
        try await Self.publish(FleetWindowTests.completed("before"), names: names, url: url)
        #expect(try await Self.eventually { hub.snapshot().invocations.map(\.id) == ["before"] })

        try cluster.killNode(0)
        #expect(try await Self.eventually { !hub.snapshot().feed.connected }, "the page would still say connected")
        try cluster.start()
        #expect(try await Self.eventually { hub.snapshot().feed.connected && hub.snapshot().feed.connections >= 2 })

        try await Self.publish(FleetWindowTests.completed("after"), names: names, url: url)
        #expect(try await Self.eventually { hub.snapshot().invocations.map(\.id) == ["after", "before"] })
    }
}

/// The `kiln-dashboard` user of `deploy/rabbitmq/definitions.json`, with exactly the shipped
/// permissions in a virtual host of its own on the test broker: the feed works as that user,
/// which can read telemetry and nothing more.
@Suite("The dashboard's broker user")
struct DashboardPermissionsTests {
    @Test(.timeLimit(.minutes(2)))
    func theDashboardUserReadsTelemetryAndNothingMore() async throws {
        let vhost = "kiln-dash-perm-\(UUID().uuidString.prefix(8).lowercased())"
        let user = "kiln-dashboard-\(vhost)"
        let passwords = try BrokerAdmin.makeVirtualHost(vhost, users: [(user, "kiln-dashboard")])
        defer { BrokerAdmin.remove(vhost, users: [user]) }
        let base = try AMQPConfiguration(url: ProcessInfo.processInfo.environment["KILN_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/%2f")
        let url = "amqp://\(user):\(passwords[user]!)@\(base.host):\(base.port)/\(vhost)"
        // The shipped patterns are for the `kiln` prefix; the workers (guest here) declared it.
        let names = KilnNames(prefix: "kiln")
        let guest = AMQPConnection(configuration: try AMQPConfiguration(url: "amqp://guest:guest@\(base.host):\(base.port)/\(vhost)"),
                                   logger: TelemetryFeedTests.logger)
        try await guest.connect()
        try await guest.declare(.kiln(names))

        let hub = DashboardHub(logger: TelemetryFeedTests.logger)
        let feed = TelemetryFeed(endpoints: [try AMQPConfiguration(url: url)], names: names, hub: hub, logger: TelemetryFeedTests.logger)
        let running = Task { try await feed.run() }
        defer { running.cancel() }
        #expect(try await TelemetryFeedTests.eventually(60) { hub.snapshot().feed.connected })
        let event = FleetWindowTests.completed("seen")
        try await guest.publish(AMQPMessage(exchange: names.telemetryExchange, routingKey: event.routingKey,
                                            body: try MessagePackEncoder().encode(event)))
        #expect(try await TelemetryFeedTests.eventually(60) { hub.snapshot().invocations.map(\.id) == ["seen"] })

        // Nothing more: it cannot take invocations, submit one, publish telemetry or delete it.
        let asDashboard = AMQPConnection(configuration: try AMQPConfiguration(url: url), logger: TelemetryFeedTests.logger)
        try await asDashboard.connect()
        // Each refused by the broker's access control (403), not failed some other way.
        func refusal(_ operation: () async throws -> Void) async -> String {
            do {
                try await operation()
                return "allowed"
            } catch {
                return "\(error)"
            }
        }
        let consumed = await refusal { _ = try await asDashboard.consume(queue: names.invocationsQueue, prefetch: 1) }
        #expect(consumed.contains("403"), "consume kiln.invocations: \(consumed)")
        let invoked = await refusal { try await asDashboard.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "echo", body: [1])) }
        #expect(invoked.contains("403"), "publish to kiln.invoke: \(invoked)")
        let emitted = await refusal {
            try await asDashboard.publish(AMQPMessage(exchange: names.telemetryExchange, routingKey: "x", body: [1]))
        }
        #expect(emitted.contains("403"), "publish to kiln.telemetry: \(emitted)")
        // Nor take the exchange away from the workers.
        let deleted = await refusal { try await asDashboard.deleteExchange(names.telemetryExchange) }
        #expect(deleted.contains("403"), "delete kiln.telemetry: \(deleted)")
        await asDashboard.close(grace: .zero)
        await guest.close(grace: .zero)
    }
}
