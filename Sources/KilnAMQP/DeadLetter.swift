extension AMQPConnection {
    /// Publishes a copy of `delivery` to `exchange` with the reason in the `x-kiln-error` header
    /// (and where it came from in `x-kiln-original-exchange` / `x-kiln-original-routing-key`),
    /// returning once the broker has confirmed it. Acknowledge the original afterwards: then the
    /// message is never lost, at worst dead-lettered twice.
    ///
    /// Use this rather than `reject(requeue: false)` when the reason matters: a broker
    /// dead-letter through the queue's DLX carries only `x-death`.
    public func deadLetter(_ delivery: AMQPDelivery, reason: String, exchange: String) async throws {
        var properties = delivery.properties
        properties.headers[KilnNames.errorHeader] = .string(String(reason.prefix(1_000)))
        properties.headers["x-kiln-original-exchange"] = .string(delivery.exchange)
        properties.headers["x-kiln-original-routing-key"] = .string(delivery.routingKey)
        properties.deliveryMode = 2
        try await publish(AMQPMessage(exchange: exchange, routingKey: delivery.routingKey, body: delivery.body, properties: properties))
    }
}
