/// A message the broker delivered to a consumer. Settle each one exactly once: ``ack()``,
/// ``nack(requeue:)`` or ``reject(requeue:)``; until then it counts against the prefetch.
public struct AMQPDelivery: Sendable {
    public let body: [UInt8]
    public let properties: AMQPProperties
    public let deliveryTag: UInt64
    /// Whether the broker delivered this message before (to this or another consumer).
    public let redelivered: Bool
    public let exchange: String
    public let routingKey: String
    let epoch: Int
    let connection: ConnectionLoop

    /// Acknowledges the message: the broker forgets it.
    /// - Throws: ``AMQPError/staleDelivery(deliveryTag:)`` when the connection was replaced
    ///   since the delivery (the broker requeued it), ``AMQPError/closed`` after `close`.
    public func ack() throws(AMQPError) {
        try connection.settle(self, .ack)
    }

    /// Negatively acknowledges the message: requeued, or dead-lettered when `requeue` is false.
    public func nack(requeue: Bool) throws(AMQPError) {
        try connection.settle(self, .nack(requeue: requeue))
    }

    /// Rejects the message: requeued, or dead-lettered when `requeue` is false.
    public func reject(requeue: Bool) throws(AMQPError) {
        try connection.settle(self, .reject(requeue: requeue))
    }
}

/// How a delivery is settled.
enum Settlement: Sendable {
    case ack
    case nack(requeue: Bool)
    case reject(requeue: Bool)
}

/// The deliveries of one consumer, in order. The sequence continues across reconnects; it ends
/// when the connection closes.
public struct AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery
    let stream: AsyncThrowingStream<AMQPDelivery, any Error>

    public func makeAsyncIterator() -> AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator {
        stream.makeAsyncIterator()
    }
}
