import KilnAMQP

/// What the commands that only publish or listen expect of the broker: the topology a worker
/// (or `deploy/rabbitmq/definitions.json`) declared. They never declare it themselves, so that a
/// mistyped `--prefix` or URL is an error rather than a second, empty topology nobody serves.
enum TopologyCheck {
    /// Throws a ``CommandFailure`` saying what to do when `exchange` does not exist.
    static func requireExchange(_ exchange: String, on connection: AMQPConnection, broker: String, prefix: String) async throws {
        do {
            try await connection.declare(AMQPTopology(exchanges: [.existing(exchange)]))
        } catch AMQPError.channelClosed(404, _) {
            throw CommandFailure(
                "the broker at \(broker) has no exchange \(exchange): no worker has declared Kiln's topology with prefix '\(prefix)' "
                    + "there (start `kiln worker` with that prefix, or load deploy/rabbitmq/definitions.json)")
        }
    }
}
