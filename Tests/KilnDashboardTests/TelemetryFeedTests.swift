import Foundation
import KilnAMQP
import KilnDashboard
import KilnTestSupport
import KilnWire
import Logging
import Testing

/// The dashboard's feed on a broker of the test's own, which it kills and starts again: the
/// feed sees the broker go, reconnects by itself, and events published after the restart reach
/// the window.
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
