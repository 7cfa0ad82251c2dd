/// What tasks ask of a connection's thread.
enum ConnectionCommand: Sendable {
    case publish(PendingPublish)
    case settle(tag: UInt64, epoch: Int, Settlement)
    case declare(AMQPTopology, CheckedContinuation<Void, any Error>)
    case consume(ConsumerRequest)
    case maintenance(Maintenance, CheckedContinuation<AMQPQueueState?, any Error>)
    case cancelConsumer(CheckedContinuation<Void, Never>)
    case close(grace: Duration, CheckedContinuation<Void, Never>)
    /// A task's job, for ``AMQPConnectionExecutor``.
    case run(UnownedJob)
}

/// One-off broker calls that are not part of the topology.
enum Maintenance: Sendable {
    case deleteQueue(String)
    case deleteExchange(String)
    case unbind(AMQPTopology.Binding)
    /// A passive declare: the queue's counts, or a 404 when it does not exist.
    case inspectQueue(String)
}

/// A message waiting to be sent or confirmed, and the task waiting for its confirm.
struct PendingPublish: Sendable {
    let message: AMQPMessage
    let continuation: CheckedContinuation<Void, any Error>
}

/// A consumer to start: the queue, its prefetch, and where its deliveries go.
struct ConsumerRequest: Sendable {
    let queue: String
    let prefetch: UInt16
    /// The broker counts each delivery settled as it sends it (no-ack): nothing to settle.
    let automaticAcknowledgement: Bool
    let arguments: [String: AMQPFieldValue]
    let deliveries: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation
    let started: CheckedContinuation<Void, any Error>
}

extension PendingPublish: RoutedPublish {
    var exchange: String { message.exchange }
    var routingKey: String { message.routingKey }
}
