// The connection's thread: connecting, its passes connected and disconnected, sleeping and
// finishing. What it does with each command is in ConnectionLoop+Commands.swift, with each frame
// in ConnectionLoop+Frames.swift; what it decides is ConnectionStateMachine's.
import CRabbitMQ
import Foundation
import Logging
import Synchronization

/// A rabbitmq-c connection and everything that touches it, confined to one thread: rabbitmq-c is
/// blocking and not thread-safe. Tasks talk to it through ``mailbox``; it answers through the
/// continuations in the commands and the consumer's stream.
///
/// The thread waits in `poll` on the socket and the mailbox's wake-up pipe, reads frames without
/// blocking (which also keeps heartbeats going), and reconnects when the connection is lost: it
/// declares its topologies again, starts its consumer again and resends what was not confirmed.
/// What to send, confirm, settle, close and when to reconnect is decided by its
/// ``ConnectionStateMachine``; the thread does the rabbitmq-c I/O and answers the tasks.
final class ConnectionLoop: @unchecked Sendable {
    // Shared with other threads.
    let mailbox = Mailbox<ConnectionCommand>()
    let executor: AMQPConnectionExecutor
    /// Bumped whenever delivery tags start over (new connection or channel): deliveries made
    /// before are stale.
    let epoch = Atomic<Int>(0)
    /// Successful connections so far: 1 after the first, one more per reconnect.
    let connections = Atomic<Int>(0)
    /// Whether a connection is up now.
    let isConnected = Atomic<Bool>(false)
    /// The brokers to connect to (the nodes of a cluster), tried in turn from the current one.
    let endpoints: [AMQPConfiguration]
    /// The endpoint connected to, or tried next. Confined to the loop's thread.
    var endpointIndex = 0
    /// The current endpoint's settings (the first's until the thread runs).
    var configuration: AMQPConfiguration { endpoints[endpointIndex] }
    let logger: Logger

    // Confined to the loop's thread from here on.
    var session: RabbitMQSession?
    var machine: ConnectionStateMachine<PendingPublish>
    var topologies: [AMQPTopology] = []
    var consumer: ConsumerState?
    /// The callers of `close`, answered when the connection has ended.
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    var finished = false
    /// Declares and a consumer start that came while disconnected, answered once connected.
    var pendingDeclares: [(AMQPTopology, CheckedContinuation<Void, any Error>)] = []
    var pendingConsumerStart: CheckedContinuation<Void, any Error>?
    /// Whether this pass handed something to a task (a delivery, a confirm) that is likely to
    /// answer at once.
    var expectingCommand = false

    struct ConsumerState {
        let request: ConsumerRequest
        var tag: String?
        var retryAt: ContinuousClock.Instant?
        /// Cancelled: the stream ends once the deliveries already received are handed out.
        var cancelled = false
    }

    init(endpoints: [AMQPConfiguration], publishWindow: Int, retryUnconfirmed: Bool, logger: Logger) {
        precondition(!endpoints.isEmpty, "a connection needs at least one endpoint")
        self.endpoints = endpoints
        let configuration = endpoints[0]
        self.machine = ConnectionStateMachine(
            publishWindow: publishWindow, retryUnconfirmed: retryUnconfirmed, reconnect: configuration.reconnect,
            random: { Double.random(in: 0...1) })
        self.executor = AMQPConnectionExecutor(mailbox: mailbox)
        var logger = logger
        logger[metadataKey: "amqp.connection"] = .string(configuration.connectionName)
        self.logger = logger
    }

    /// Starts the thread; `connected` learns how the first connection attempt went. After a
    /// failed first attempt the thread ends: a wrong URL or password is not retried forever.
    func start(connected: CheckedContinuation<Void, any Error>) {
        let thread = Thread { [self] in run(connected: connected) }
        thread.name = "kiln-amqp \(configuration.connectionName)"
        mailbox.start()
        thread.start()
    }

    func run(connected: CheckedContinuation<Void, any Error>) {
        // The kernel's name, for `top -H` and `ps -L`: a new thread has its creator's, and
        // `Thread.name` does not reach the kernel when it is longer than its 15 bytes.
        let comm = open("/proc/thread-self/comm", O_WRONLY)
        if comm >= 0 {
            _ = "kiln-amqp".utf8CString.withUnsafeBytes { write(comm, $0.baseAddress, $0.count - 1) }
            close(comm)
        }
        do {
            try connectToAnyEndpoint()
            connected.resume()
        } catch {
            finish(with: error)
            connected.resume(throwing: error)
            return
        }
        while !finished {
            if let session {
                do {
                    try serviceOpenConnection(session)
                } catch let error as AMQPError {
                    recover(from: error)
                } catch {
                    recover(from: .protocolError(String(describing: error)))
                }
            } else {
                serviceLostConnection()
            }
        }
    }

    // MARK: Connecting

    /// Connects to the current endpoint, else to each of the others in turn (a node of a cluster
    /// that is down is skipped at once); throws the current endpoint's error when none answers.
    func connectToAnyEndpoint() throws(AMQPError) {
        var firstError: AMQPError?
        for _ in endpoints.indices {
            do {
                try connect()
                return
            } catch {
                firstError = firstError ?? error
                if endpoints.count > 1 {
                    logger.warning("cannot connect to \(configuration.redactedURL): \(error)")
                    endpointIndex = (endpointIndex + 1) % endpoints.count
                }
            }
        }
        throw firstError ?? .closed
    }

    func connect() throws(AMQPError) {
        let session = try RabbitMQSession(configuration: configuration)
        try session.enableConfirms()
        for topology in topologies { try declare(topology, on: session) }
        opened()
        self.session = session
        if consumer != nil { try startConsumer(on: session) }
        connections.add(1, ordering: .relaxed)
        isConnected.store(true, ordering: .relaxed)
        logger.info("connected to \(configuration.redactedURL)")
    }

    /// A connection or channel is open: delivery tags start over, for settlements too.
    func opened() {
        machine.opened()
        epoch.store(machine.epoch, ordering: .releasing)
    }

    func declare(_ topology: AMQPTopology, on session: RabbitMQSession) throws(AMQPError) {
        for exchange in topology.exchanges { try session.declare(exchange) }
        for queue in topology.queues { _ = try session.declare(queue) }
        for binding in topology.bindings { try session.declare(binding) }
    }

    func startConsumer(on session: RabbitMQSession) throws(AMQPError) {
        guard var state = consumer, !state.cancelled else { return }
        try session.qos(prefetch: state.request.prefetch)
        state.tag = try session.consume(queue: state.request.queue, automaticAcknowledgement: state.request.automaticAcknowledgement,
                                            arguments: state.request.arguments)
        state.retryAt = nil
        consumer = state
    }

    /// Handles a failure while connected: a closed channel is reopened on the same connection;
    /// anything else drops the connection and schedules a reconnect.
    func recover(from error: AMQPError) {
        if case .channelClosed(let code, let text) = error, let session {
            logger.warning("channel closed by the broker: \(code) \(text); reopening it")
            answer(machine.channelClosed(error, text: text))
            do {
                try session.reopenChannel()
                try session.enableConfirms()
                opened()
                if consumer != nil { try startConsumer(on: session) }
                return
            } catch {
                logger.warning("could not reopen the channel: \(error)")
            }
        }
        connectionLost(error)
    }

    func connectionLost(_ error: AMQPError) {
        logger.warning("connection lost: \(error)")
        isConnected.store(false, ordering: .relaxed)
        session = nil
        consumer?.tag = nil
        let (answers, next) = machine.connectionLost(error, now: .now)
        epoch.store(machine.epoch, ordering: .releasing)
        answer(answers)
        if next == .finish { finish(with: AMQPError.closed) }
    }

    /// While disconnected: keep commands for later, and try again when the backoff allows.
    func serviceLostConnection() {
        for command in mailbox.take() { handleWhileDisconnected(command) }
        if finished { return }
        if machine.reconnectDue(now: .now) {
            do {
                try connectToAnyEndpoint()
                flushPendingStarts()
            } catch {
                logger.warning("reconnect attempt \(machine.reconnectAttempt) failed: \(error)")
                machine.reconnectFailed(now: .now)
            }
            return
        }
        sleep(socket: nil, until: machine.reconnectAt)
    }

    // MARK: Connected

    func serviceOpenConnection(_ session: RabbitMQSession) throws {
        let commands = mailbox.take()
        for (index, command) in commands.enumerated() {
            do {
                try handle(command, on: session)
            } catch {
                // The rest of the batch waits for the recovery; none of it is dropped.
                for command in mailbox.putBack(commands[(index + 1)...]) { abandon(command, with: error) }
                throw error
            }
        }
        var didWork = !commands.isEmpty
        try sendAcks(on: session)
        try sendQueuedPublishes(on: session)

        var frames = 0
        while frames < 512, let frame = try session.nextFrame() {
            try handle(frame, on: session)
            frames += 1
        }
        if frames > 0 {
            didWork = true
            try sendQueuedPublishes(on: session)
        }
        if !session.hasBufferedFrames { session.releaseBuffers() }
        if consumer?.cancelled == true, !session.hasBufferedFrames {
            consumer?.request.deliveries.finish()
            consumer = nil
        }

        if let retryAt = consumer?.retryAt, ContinuousClock.now >= retryAt {
            try startConsumer(on: session)
        }
        if case .closeNow(let unconfirmed, let unsettled) = machine.closeStep(now: .now) {
            if unconfirmed > 0 || unsettled > 0 {
                logger.warning("closing with \(unconfirmed) publishes unconfirmed and \(unsettled) deliveries unsettled after the grace period")
            }
            session.close()
            finish(with: AMQPError.closed)
            return
        }
        if !didWork && !session.hasBufferedFrames {
            if expectingCommand {
                expectingCommand = false
                if mailbox.spin(upTo: .microseconds(50)) { return }
            }
            sleep(socket: session.descriptor, until: ContinuousClock.now + pollInterval)
        }
    }

    /// How long the thread may sleep while connected: short enough to send heartbeats on time.
    var pollInterval: Duration {
        if configuration.tls != nil { return .milliseconds(20) } // TLS may hold decrypted bytes poll cannot see.
        var interval = Duration.seconds(1)
        if configuration.heartbeat > .zero { interval = min(interval, configuration.heartbeat / 2) }
        if let deadline = machine.closeDeadline { interval = min(interval, max(.milliseconds(1), deadline - ContinuousClock.now)) }
        if let retryAt = consumer?.retryAt { interval = min(interval, max(.milliseconds(1), retryAt - ContinuousClock.now)) }
        return interval
    }

    func send(_ settle: ConnectionStateMachine<PendingPublish>.Settle, on session: RabbitMQSession) throws {
        switch settle {
        case .ack(let tag, let multiple): try session.ack(tag, multiple: multiple)
        case .nack(let tag, let requeue): try session.nack(tag, requeue: requeue)
        case .reject(let tag, let requeue): try session.reject(tag, requeue: requeue)
        }
    }

    func sendAcks(on session: RabbitMQSession) throws {
        for ack in machine.takeAcks() { try send(ack, on: session) }
    }

    func sendQueuedPublishes(on session: RabbitMQSession) throws {
        // Several publishes at once go out in full TCP segments rather than one per frame.
        let corked = machine.sendsSeveral
        if corked { session.cork(true) }
        defer { if corked { session.cork(false) } }
        while let pending = machine.nextToSend() {
            do {
                try session.publish(pending.message)
            } catch AMQPError.invalidMessage(let reason) {
                // Nothing of it was sent: fail this one, keep the connection and the rest.
                pending.continuation.resume(throwing: AMQPError.invalidMessage(reason))
                continue
            } catch {
                machine.notSent(pending)
                throw error
            }
            machine.sent(pending)
        }
    }

    /// Resumes the tasks waiting for these publishes.
    func answer(_ answers: [ConnectionStateMachine<PendingPublish>.Answer]) {
        for answer in answers {
            switch answer {
            case .confirmed(let pending): pending.continuation.resume()
            case .failed(let pending, let error): pending.continuation.resume(throwing: error)
            }
        }
    }

    // MARK: Called from other threads

    /// Queues the settlement of `delivery`.
    func settle(_ delivery: AMQPDelivery, _ settlement: Settlement) throws(AMQPError) {
        guard delivery.epoch == epoch.load(ordering: .acquiring) else {
            throw .staleDelivery(deliveryTag: delivery.deliveryTag)
        }
        guard mailbox.post(.settle(tag: delivery.deliveryTag, epoch: delivery.epoch, settlement)) else { throw .closed }
    }

    // MARK: Sleeping and finishing

    func sleep(socket: Int32?, until deadline: ContinuousClock.Instant) {
        guard mailbox.prepareToSleep() else { return }
        let remaining = deadline - ContinuousClock.now
        let milliseconds = max(0, Int32(clamping: min(remaining.components.seconds, 86_400) * 1_000 + remaining.components.attoseconds / 1_000_000_000_000_000))
        var descriptors = [pollfd(fd: mailbox.wakeDescriptor, events: Int16(POLLIN), revents: 0)]
        if let socket { descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
        _ = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
        mailbox.awake()
    }

    /// Ends the loop: everything still waiting fails with `error`, the consumer's sequence ends.
    func finish(with error: any Error) {
        finished = true
        isConnected.store(false, ordering: .relaxed)
        session = nil
        for command in mailbox.close() { abandon(command, with: error) }
        for pending in machine.finish() { pending.continuation.resume(throwing: error) }
        for (_, done) in pendingDeclares { done.resume(throwing: error) }
        pendingDeclares.removeAll()
        pendingConsumerStart?.resume(throwing: error)
        pendingConsumerStart = nil
        consumer?.request.deliveries.finish()
        consumer = nil
        for done in closeWaiters { done.resume() }
        closeWaiters.removeAll()
    }
}
