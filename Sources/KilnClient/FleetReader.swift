import KilnAMQP
import KilnWire

/// Reads a fleet's `host.sample` events back from the fleet stream (``KilnNames/fleetStream``,
/// where every worker's samples stay for an hour): from `lookBack` ago, then on for `window`,
/// so that the view holds both workers that stopped reporting before the read began and the
/// newest sample of every live one.
public enum FleetReader {
    /// Deliveries the broker sends ahead of their acknowledgements.
    static let prefetch: UInt16 = 500

    /// The fleet as the stream shows it from `lookBack` ago until `window` from now.
    ///
    /// - Parameters:
    ///   - connection: A connected connection; it consumes the stream (one consumer per
    ///     connection) and should be closed afterwards.
    ///   - names: The deployment's names.
    ///   - lookBack: How far back to start, at most the stream's hour.
    ///   - window: How long to go on reading new samples (a worker sends one a second).
    public static func read(from connection: AMQPConnection, names: KilnNames, lookBack: Duration, window: Duration) async throws -> FleetView {
        let seconds = max(1, min(lookBack.components.seconds, 86_400))
        let consumer = try await connection.consume(
            queue: names.fleetStream, prefetch: prefetch, arguments: ["x-stream-offset": .string("\(seconds)s")])
        return try await withThrowingTaskGroup(of: FleetView?.self) { group in
            group.addTask {
                var view = FleetView()
                let decoder = MessagePackDecoder()
                // Ends when the task is cancelled: the window has passed.
                for try await delivery in consumer {
                    try delivery.ack()
                    if let event = try? decoder.decode(TelemetryEvent.self, from: delivery.body) { view.ingest(event) }
                }
                return view
            }
            group.addTask {
                try await Task.sleep(for: window)
                return nil
            }
            var view: FleetView?
            while let finished = try await group.next() {
                if let finished { view = finished }
                group.cancelAll()
            }
            return view ?? FleetView()
        }
    }
}
