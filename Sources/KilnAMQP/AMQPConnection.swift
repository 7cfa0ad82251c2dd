import Logging

/// A connection to RabbitMQ with one channel in publisher-confirm mode, driven by its own
/// thread (see ``ConnectionLoop``). It reconnects by itself after the first successful
/// ``connect()``: with backoff and jitter, declaring its topologies again, restarting its
/// consumer and resending unconfirmed publishes.
///
/// ```swift
/// let connection = AMQPConnection(configuration: try AMQPConfiguration(url: url), logger: logger)
/// try await connection.connect()
/// try await connection.declare(.kiln())
/// for try await delivery in try await connection.consume(queue: "kiln.invocations", prefetch: 64) {
///     …
///     try delivery.ack()
/// }
/// ```
///
/// Use separate connections for consuming and for publishing under load: the broker throttles a
/// publishing connection, and a consumer should not wait behind that.
public final class AMQPConnection: Sendable {
    public let configuration: AMQPConfiguration
    let loop: ConnectionLoop

    /// Creates a connection; nothing happens until ``connect()``.
    ///
    /// - Parameters:
    ///   - configuration: Where and how to connect.
    ///   - publishWindow: Publishes sent but not yet confirmed, at most; more wait their turn.
    ///   - retryUnconfirmedPublishes: Whether publishes unconfirmed when the connection drops are
    ///     sent again after reconnecting (the broker may then hold duplicates: consumers must
    ///     tolerate at-least-once), or fail with ``AMQPError/connectionLost(_:)``.
    ///   - logger: Where the connection logs reconnects and broker errors.
    public convenience init(
        configuration: AMQPConfiguration, publishWindow: Int = 256, retryUnconfirmedPublishes: Bool = true,
        logger: Logger
    ) {
        self.init(endpoints: [configuration], publishWindow: publishWindow, retryUnconfirmedPublishes: retryUnconfirmedPublishes,
                  logger: logger)
    }

    /// Creates a connection to any of `endpoints`, the nodes of one cluster: it connects to the
    /// first that answers, and when the connection is lost it reconnects to the same node or,
    /// when that one does not answer, to the next (declaring its topologies again there,
    /// restarting its consumer and resending what was not confirmed). The first endpoint's
    /// settings name the connection and set its reconnect policy.
    public init(
        endpoints: [AMQPConfiguration], publishWindow: Int = 256, retryUnconfirmedPublishes: Bool = true, logger: Logger
    ) {
        self.configuration = endpoints[0]
        self.loop = ConnectionLoop(
            endpoints: endpoints, publishWindow: publishWindow, retryUnconfirmed: retryUnconfirmedPublishes, logger: logger)
    }

    /// Connects. A failure here is thrown, not retried: it is usually a wrong URL, password or
    /// host. Call once.
    public func connect() async throws {
        try await withCheckedThrowingContinuation { continuation in loop.start(connected: continuation) }
    }

    /// The connection's thread as a task executor, for tasks that do little but publish and
    /// consume on this connection (see ``AMQPConnectionExecutor``).
    public var executor: AMQPConnectionExecutor { loop.executor }

    /// How many times the connection has been established: 1 after ``connect()``, one more
    /// after each reconnect.
    public var connectionCount: Int { loop.connections.load(ordering: .relaxed) }

    /// Whether the connection is up now (false while it waits to reconnect, and once closed).
    public var isConnected: Bool { loop.isConnected.load(ordering: .relaxed) }

    /// Declares `topology` now and after every reconnect.
    public func declare(_ topology: AMQPTopology) async throws {
        try await withCheckedThrowingContinuation { continuation in
            post(.declare(topology, continuation), orFail: continuation)
        }
    }

    /// Publishes `message` and returns once the broker has confirmed it.
    ///
    /// - Throws: ``AMQPError/unroutable(exchange:routingKey:code:text:)`` for a mandatory message
    ///   no queue took, ``AMQPError/publishNacked(exchange:routingKey:)``,
    ///   ``AMQPError/channelClosed(code:text:)`` (for example 404 for a missing exchange),
    ///   ``AMQPError/invalidMessage(_:)`` for a message AMQP cannot carry (at once: it is not
    ///   sent, and the connection is unaffected), or ``AMQPError/closed``.
    public func publish(_ message: AMQPMessage) async throws {
        try message.validate()
        try await withCheckedThrowingContinuation { continuation in
            post(.publish(PendingPublish(message: message, continuation: continuation)), orFail: continuation)
        }
    }

    /// Starts consuming `queue` with at most `prefetch` unsettled deliveries. One consumer per
    /// connection. With `automaticAcknowledgement` the broker counts each delivery settled as it
    /// sends it (no-ack: what RabbitMQ's direct reply-to, `amq.rabbitmq.reply-to`, requires);
    /// settling one then sends nothing, and the prefetch does not hold the broker back.
    /// `arguments` go with `basic.consume` (a stream's `x-stream-offset`, for one).
    public func consume(
        queue: String, prefetch: UInt16, automaticAcknowledgement: Bool = false, arguments: [String: AMQPFieldValue] = [:]
    ) async throws -> AMQPConsumer {
        let (stream, deliveries) = AsyncThrowingStream<AMQPDelivery, any Error>.makeStream()
        try await withCheckedThrowingContinuation { (started: CheckedContinuation<Void, any Error>) in
            let request = ConsumerRequest(queue: queue, prefetch: prefetch, automaticAcknowledgement: automaticAcknowledgement,
                                          arguments: arguments, deliveries: deliveries, started: started)
            if !loop.mailbox.post(.consume(request)) {
                deliveries.finish()
                started.resume(throwing: AMQPError.closed)
            }
        }
        return AMQPConsumer(stream: stream)
    }

    /// Stops the consumer: the broker sends no more, and the consumer's sequence ends once the
    /// deliveries already received are handed out. Those can still be settled.
    public func cancelConsumer() async {
        await withCheckedContinuation { continuation in
            if !loop.mailbox.post(.cancelConsumer(continuation)) { continuation.resume() }
        }
    }

    /// Deletes a queue (for tests and tools).
    public func deleteQueue(_ name: String) async throws {
        _ = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AMQPQueueState?, any Error>) in
            post(.maintenance(.deleteQueue(name), continuation), orFail: continuation)
        }
    }

    /// Deletes an exchange (for tests and tools).
    public func deleteExchange(_ name: String) async throws {
        _ = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AMQPQueueState?, any Error>) in
            post(.maintenance(.deleteExchange(name), continuation), orFail: continuation)
        }
    }

    /// Removes a binding.
    public func unbind(_ binding: AMQPTopology.Binding) async throws {
        _ = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AMQPQueueState?, any Error>) in
            post(.maintenance(.unbind(binding), continuation), orFail: continuation)
        }
    }

    /// A queue's messages and consumers now (a 404 `channelClosed` when there is no such queue).
    public func queueState(_ name: String) async throws -> AMQPQueueState {
        let state = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AMQPQueueState?, any Error>) in
            post(.maintenance(.inspectQueue(name), continuation), orFail: continuation)
        }
        return state ?? AMQPQueueState(messages: 0, consumers: 0)
    }

    /// Closes cleanly: cancels the consumer, lets unsettled deliveries and unconfirmed publishes
    /// finish for up to `grace`, then closes the channel and the connection. What is still
    /// pending after that fails with ``AMQPError/closed``; the broker requeues unsettled
    /// deliveries.
    public func close(grace: Duration = .seconds(5)) async {
        await withCheckedContinuation { continuation in
            if !loop.mailbox.post(.close(grace: grace, continuation)) { continuation.resume() }
        }
    }

    private func post<Answer>(_ command: ConnectionCommand, orFail continuation: CheckedContinuation<Answer, any Error>) {
        if !loop.mailbox.post(command) { continuation.resume(throwing: AMQPError.closed) }
    }
}
