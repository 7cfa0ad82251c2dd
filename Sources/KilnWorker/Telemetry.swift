import Foundation
import KilnAMQP
import KilnWire
import Logging
import Metrics
import ServiceLifecycle

/// Where the worker's components report events. Emitting never waits: events go into a bounded
/// buffer that ``TelemetryPublisher`` drains to `kiln.telemetry` off the hot path; when the
/// buffer is full the oldest are dropped (and counted).
public struct TelemetrySink: Sendable {
    let host: String
    let worker: String
    let continuation: AsyncStream<TelemetryEvent>.Continuation
    private let dropped = Counter(label: KilnMetric.telemetryDroppedTotal.rawValue)

    /// Reports `payload`, stamped with the host, the worker and the time.
    public func emit(_ payload: TelemetryEvent.Payload) {
        let event = TelemetryEvent(host: host, worker: worker, atUs: Self.nowMicroseconds(), payload: payload)
        if case .dropped = continuation.yield(event) { dropped.increment() }
    }

    /// Unix time in microseconds.
    public static func nowMicroseconds() -> UInt64 {
        UInt64(Date().timeIntervalSince1970 * 1_000_000)
    }
}

/// Publishes telemetry events to `kiln.telemetry` with routing key `<kind>.<host>`, with
/// confirms, up to `maxInFlight` at a time; a `Service`. On graceful shutdown it publishes what
/// is buffered, then stops.
public final class TelemetryPublisher: Service, Sendable {
    private let stream: AsyncStream<TelemetryEvent>
    private let continuation: AsyncStream<TelemetryEvent>.Continuation
    private let connection: AMQPConnection
    private let exchange: String
    private let logger: Logger
    private let maxInFlight: Int
    private let failed = Counter(label: KilnMetric.telemetryPublishFailuresTotal.rawValue)
    /// The end other components emit into.
    public let sink: TelemetrySink

    /// Creates a publisher.
    /// - Parameters:
    ///   - connection: The AMQP connection to publish on.
    ///   - exchange: The telemetry exchange.
    ///   - host: The host name in routing keys and events.
    ///   - worker: The worker name in events.
    ///   - bufferSize: Events buffered at most before the oldest are dropped.
    ///   - maxInFlight: Events published and not yet confirmed at most.
    ///   - logger: For publish failures.
    public init(
        connection: AMQPConnection, exchange: String, host: String, worker: String, bufferSize: Int = 10_000,
        maxInFlight: Int = 128, logger: Logger
    ) {
        (stream, continuation) = AsyncStream<TelemetryEvent>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        self.connection = connection
        self.exchange = exchange
        self.logger = logger
        self.maxInFlight = maxInFlight
        self.sink = TelemetrySink(host: host, worker: worker, continuation: continuation)
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                var inFlight = 0
                for await event in stream {
                    if inFlight >= maxInFlight {
                        await group.next()
                        inFlight -= 1
                    }
                    group.addTask { await self.publish(event) }
                    inFlight += 1
                }
                await group.waitForAll()
            }
        } onGracefulShutdown: {
            // Stop taking events; those already buffered are still published.
            self.continuation.finish()
        }
    }

    private func publish(_ event: TelemetryEvent) async {
        do {
            let body = try MessagePackEncoder().encode(event)
            try await connection.publish(AMQPMessage(
                exchange: exchange, routingKey: event.routingKey, body: body,
                properties: AMQPProperties(contentType: "application/msgpack", deliveryMode: 1, type: event.payload.kind)))
        } catch {
            failed.increment()
            logger.debug("telemetry event \(event.payload.kind) not published: \(error)")
        }
    }
}
