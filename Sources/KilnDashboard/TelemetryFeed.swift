import Foundation
import KilnAMQP
import Logging
import ServiceLifecycle

/// The dashboard's one consumer of `kiln.telemetry`: every worker's events, through a queue of
/// its own (exclusive, gone with the connection) bound with `#`. The connection declares that
/// queue again after the broker restarts, and the feed goes on; until the broker first answers,
/// it tries again every few seconds. The queue holds at most ``maxQueued`` events and drops the
/// oldest beyond, so that a stalled dashboard never weighs on the broker.
public struct TelemetryFeed: Service {
    /// Events the dashboard's queue holds at most.
    public static let maxQueued = 10_000

    let endpoints: [AMQPConfiguration]
    let names: KilnNames
    let hub: DashboardHub
    let logger: Logger

    public init(endpoints: [AMQPConfiguration], names: KilnNames, hub: DashboardHub, logger: Logger) {
        self.endpoints = endpoints
        self.names = names
        self.hub = hub
        self.logger = logger
    }

    /// The queue and its binding: the exchange is declared as the workers declare it, so that
    /// the dashboard can start before any worker.
    func topology(queue: String) -> AMQPTopology {
        AMQPTopology(
            exchanges: [.init(name: names.telemetryExchange, type: .topic)],
            queues: [.init(name: queue, durable: false, exclusive: true, autoDelete: true, arguments: [
                "x-max-length": .int(Int64(Self.maxQueued)), "x-overflow": .string("drop-head"),
            ])],
            bindings: [.init(queue: queue, exchange: names.telemetryExchange, routingKey: "#")])
    }

    public func run() async throws {
        let queue = "\(names.prefix).dashboard.\(UUID().uuidString.prefix(8).lowercased())"
        try await cancelWhenGracefulShutdown { [self] in
            let connection = try await connectWhenTheBrokerAnswers()
            defer { Task { await connection.close(grace: .seconds(1)) } }
            try await connection.declare(topology(queue: queue))
            let watcher = Task { [hub] in
                // The connection reconnects by itself; the page shows whether it is up.
                while !Task.isCancelled {
                    hub.feedConnection(connected: connection.isConnected, connections: connection.connectionCount)
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
            defer { watcher.cancel() }
            logger.info("dashboard reading \(names.telemetryExchange) through \(queue)")
            for try await delivery in try await connection.consume(queue: queue, prefetch: 1_000, automaticAcknowledgement: true) {
                hub.ingest(body: delivery.body)
            }
        }
    }

    /// The first connection: retried every 2 s while the broker does not answer (the dashboard
    /// may start before it), until cancelled.
    private func connectWhenTheBrokerAnswers() async throws -> AMQPConnection {
        while true {
            let connection = AMQPConnection(endpoints: endpoints, logger: logger)
            do {
                try await connection.connect()
                return connection
            } catch {
                await connection.close(grace: .zero)
                hub.feedConnection(connected: false, connections: 0)
                logger.warning("dashboard: the broker at \(endpoints[0].redactedURL) does not answer (\(error)); trying again in 2 s")
                try await Task.sleep(for: .seconds(2))
            }
        }
    }
}
