import Foundation
import KilnAMQP
import Logging
import ServiceLifecycle

/// The dashboard's one consumer of `kiln.telemetry`: every worker's events, through a queue of
/// its own (exclusive, gone with the connection) bound with `#`. The connection declares that
/// queue again after the broker restarts, and the feed goes on; until the broker first answers,
/// and until a worker (or `definitions.json`) has made the exchange, it tries again every 2 s.
/// The queue holds at most ``maxQueued`` events and drops the oldest beyond, and the feed takes
/// at most ``prefetch`` unacknowledged at a time, so that neither a stalled dashboard weighs on
/// the broker nor a fast fleet fills the dashboard's memory.
public struct TelemetryFeed: Service {
    /// Events the dashboard's queue holds at most.
    public static let maxQueued = 10_000
    /// Events delivered and not yet taken into the window, at most.
    public static let prefetch: UInt16 = 500

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

    /// The queue and its binding. The exchange is only checked (a passive declare): the
    /// dashboard's broker user may not create or delete it, since the workers publish on it.
    func topology(queue: String) -> AMQPTopology {
        AMQPTopology(
            exchanges: [.existing(names.telemetryExchange)],
            queues: [.init(name: queue, durable: false, exclusive: true, autoDelete: true, arguments: [
                "x-max-length": .int(Int64(Self.maxQueued)), "x-overflow": .string("drop-head"),
            ])],
            bindings: [.init(queue: queue, exchange: names.telemetryExchange, routingKey: "#")])
    }

    public func run() async throws {
        let queue = "\(names.prefix).dashboard.\(UUID().uuidString.prefix(8).lowercased())"
        try await cancelWhenGracefulShutdown { [self] in
            let connection = try await connectWhenTheBrokerAnswers()
            let watcher = Task { [hub] in
                // The connection reconnects by itself; the page shows whether it is up.
                while !Task.isCancelled {
                    hub.feedConnection(connected: connection.isConnected, connections: connection.connectionCount)
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
            defer {
                watcher.cancel()
                Task { await connection.close(grace: .seconds(1)) }
            }
            try await declareWhenTheExchangeExists(topology(queue: queue), on: connection)
            hub.feedReading()
            logger.info("dashboard reading \(names.telemetryExchange) through \(queue)")
            for try await delivery in try await connection.consume(queue: queue, prefetch: Self.prefetch) {
                hub.ingest(body: delivery.body)
                try delivery.ack()
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

    /// Declares the queue once the telemetry exchange exists (no worker may have run yet); any
    /// other refusal (a user without the permissions, say) ends the feed with it.
    private func declareWhenTheExchangeExists(_ topology: AMQPTopology, on connection: AMQPConnection) async throws {
        while true {
            do {
                try await connection.declare(topology)
                return
            } catch AMQPError.channelClosed(404, _) {
                logger.warning("dashboard: no exchange \(names.telemetryExchange) yet (start a worker, or load deploy/rabbitmq/definitions.json); trying again in 2 s")
                try await Task.sleep(for: .seconds(2))
            }
        }
    }
}
