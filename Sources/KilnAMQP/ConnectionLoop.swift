// Over 400 lines: the connection thread's loop, confirms, returns and reconnect are in one
// place until they become a pure state machine (frames, confirms, timer ticks and commands in;
// actions out) with the thread doing only rabbitmq-c I/O.
import CRabbitMQ
import Foundation
import Logging
import Synchronization

/// What tasks ask of a connection's thread.
enum ConnectionCommand: Sendable {
    case publish(PendingPublish)
    case settle(tag: UInt64, epoch: Int, Settlement)
    case declare(AMQPTopology, CheckedContinuation<Void, any Error>)
    case consume(ConsumerRequest)
    case maintenance(Maintenance, CheckedContinuation<Void, any Error>)
    case cancelConsumer(CheckedContinuation<Void, Never>)
    case close(grace: Duration, CheckedContinuation<Void, Never>)
    /// A task's job, for ``AMQPConnectionExecutor``.
    case run(UnownedJob)
}

/// One-off broker calls that are not part of the topology.
enum Maintenance: Sendable {
    case deleteQueue(String)
    case deleteExchange(String)
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
    let deliveries: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation
    let started: CheckedContinuation<Void, any Error>
}

/// A first-in first-out queue that does not move its elements on every removal.
struct FIFO<Element> {
    private var elements: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == elements.count }
    var count: Int { elements.count - head }

    mutating func append(_ element: Element) { elements.append(element) }

    mutating func prepend(contentsOf items: [Element]) {
        elements.replaceSubrange(0..<head, with: [])
        head = 0
        elements.insert(contentsOf: items, at: 0)
    }

    mutating func popFirst() -> Element? {
        guard head < elements.count else { return nil }
        let element = elements[head]
        head += 1
        if head > 1_024, head * 2 > elements.count {
            elements.removeFirst(head)
            head = 0
        }
        return element
    }

    mutating func removeAll() -> [Element] {
        let rest = Array(elements[head...])
        elements.removeAll()
        head = 0
        return rest
    }
}

/// A rabbitmq-c connection and everything that touches it, confined to one thread: rabbitmq-c is
/// blocking and not thread-safe. Tasks talk to it through ``mailbox``; it answers through the
/// continuations in the commands and the consumer's stream.
///
/// The thread waits in `poll` on the socket and the mailbox's eventfd, reads frames without
/// blocking (which also keeps heartbeats going), keeps up to `publishWindow` publishes
/// unconfirmed, and reconnects with backoff when the connection is lost: it declares its
/// topologies again, starts its consumer again and resends what was not confirmed.
final class ConnectionLoop: @unchecked Sendable {
    // Shared with other threads.
    let mailbox = Mailbox<ConnectionCommand>()
    let executor: AMQPConnectionExecutor
    /// Bumped whenever delivery tags start over (new connection or channel): deliveries made
    /// before are stale.
    let epoch = Atomic<Int>(0)
    /// Successful connections so far: 1 after the first, one more per reconnect.
    let connections = Atomic<Int>(0)
    let configuration: AMQPConfiguration
    let publishWindow: Int
    let retryUnconfirmed: Bool
    private let logger: Logger

    // Confined to the loop's thread from here on.
    private var session: RabbitMQSession?
    private var topologies: [AMQPTopology] = []
    private var consumer: ConsumerState?
    private var queuedPublishes = FIFO<PendingPublish>()
    private var outstanding: [UInt64: PendingPublish] = [:]
    private var nextSequence: UInt64 = 1
    private var lowestOutstanding: UInt64 = 1
    private var lastReturn: (exchange: String, routingKey: String, code: UInt16, text: String)?
    private var unacked = Set<UInt64>()
    private var reconnectAttempt = 0
    private var reconnectAt = ContinuousClock.now
    /// Set by the first `close`: when the grace period ends, and every caller waiting for it.
    private var closing: (deadline: ContinuousClock.Instant, waiting: [CheckedContinuation<Void, Never>])?
    private var finished = false
    /// Whether this pass handed something to a task (a delivery, a confirm) that is likely to
    /// answer at once.
    private var expectingCommand = false

    private struct ConsumerState {
        let request: ConsumerRequest
        var tag: String?
        var retryAt: ContinuousClock.Instant?
        /// Cancelled: the stream ends once the deliveries already received are handed out.
        var cancelled = false
    }

    init(configuration: AMQPConfiguration, publishWindow: Int, retryUnconfirmed: Bool, logger: Logger) {
        self.configuration = configuration
        self.publishWindow = max(1, publishWindow)
        self.retryUnconfirmed = retryUnconfirmed
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

    private func run(connected: CheckedContinuation<Void, any Error>) {
        // The kernel's name, for `top -H` and `ps -L`: a new thread has its creator's, and
        // `Thread.name` does not reach the kernel when it is longer than its 15 bytes.
        let comm = open("/proc/thread-self/comm", O_WRONLY)
        if comm >= 0 {
            _ = "kiln-amqp".utf8CString.withUnsafeBytes { write(comm, $0.baseAddress, $0.count - 1) }
            close(comm)
        }
        do {
            try connect()
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

    private func connect() throws(AMQPError) {
        let session = try RabbitMQSession(configuration: configuration)
        try session.enableConfirms()
        for topology in topologies { try declare(topology, on: session) }
        startNewEpoch()
        self.session = session
        if consumer != nil { try startConsumer(on: session) }
        reconnectAttempt = 0
        connections.add(1, ordering: .relaxed)
        logger.info("connected to \(configuration.redactedURL)")
    }

    private func startNewEpoch() {
        epoch.add(1, ordering: .releasing)
        nextSequence = 1
        lowestOutstanding = 1
        unacked.removeAll()
        acksToSend.removeAll()
        lastReturn = nil
    }

    private func declare(_ topology: AMQPTopology, on session: RabbitMQSession) throws(AMQPError) {
        for exchange in topology.exchanges { try session.declare(exchange) }
        for queue in topology.queues { _ = try session.declare(queue) }
        for binding in topology.bindings { try session.declare(binding) }
    }

    private func startConsumer(on session: RabbitMQSession) throws(AMQPError) {
        guard var state = consumer, !state.cancelled else { return }
        try session.qos(prefetch: state.request.prefetch)
        state.tag = try session.consume(queue: state.request.queue)
        state.retryAt = nil
        consumer = state
    }

    /// Handles a failure while connected: a closed channel is reopened on the same connection;
    /// anything else drops the connection and schedules a reconnect.
    private func recover(from error: AMQPError) {
        if case .channelClosed(let code, let text) = error, let session {
            logger.warning("channel closed by the broker: \(code) \(text); reopening it")
            failOutstanding(afterChannelError: error, text: text)
            do {
                try session.reopenChannel()
                try session.enableConfirms()
                startNewEpoch()
                if consumer != nil { try startConsumer(on: session) }
                return
            } catch {
                logger.warning("could not reopen the channel: \(error)")
            }
        }
        connectionLost(error)
    }

    private func connectionLost(_ error: AMQPError) {
        logger.warning("connection lost: \(error)")
        session = nil
        epoch.add(1, ordering: .releasing)
        unacked.removeAll()
        acksToSend.removeAll()
        lastReturn = nil
        if var state = consumer {
            state.tag = nil
            consumer = state
        }
        let unconfirmed = outstanding.sorted { $0.key < $1.key }.map(\.value)
        outstanding.removeAll()
        if retryUnconfirmed {
            queuedPublishes.prepend(contentsOf: unconfirmed)
        } else {
            for pending in unconfirmed { pending.continuation.resume(throwing: error) }
        }
        if closing != nil {
            finish(with: AMQPError.closed)
            return
        }
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        let delay = configuration.reconnect.delay(attempt: reconnectAttempt, random: Double.random(in: 0...1))
        reconnectAttempt += 1
        reconnectAt = ContinuousClock.now + delay
    }

    /// While disconnected: keep commands for later, and try again when the backoff allows.
    private func serviceLostConnection() {
        for command in mailbox.take() { handleWhileDisconnected(command) }
        if finished { return }
        if ContinuousClock.now >= reconnectAt {
            do {
                try connect()
                flushPendingStarts()
            } catch {
                logger.warning("reconnect attempt \(reconnectAttempt) failed: \(error)")
                scheduleReconnect()
            }
            return
        }
        sleep(socket: nil, until: reconnectAt)
    }

    private var pendingDeclares: [(AMQPTopology, CheckedContinuation<Void, any Error>)] = []
    private var pendingConsumerStart: CheckedContinuation<Void, any Error>?

    private func handleWhileDisconnected(_ command: ConnectionCommand) {
        // A close earlier in the same batch ended the loop.
        guard !finished else { return abandon(command, with: AMQPError.closed) }
        switch command {
        case .publish(let pending):
            if retryUnconfirmed {
                queuedPublishes.append(pending)
            } else {
                pending.continuation.resume(throwing: AMQPError.connectionLost("not connected"))
            }
        case .settle:
            break // The broker requeued everything unacked when the connection dropped.
        case .declare(let topology, let done):
            topologies.append(topology)
            pendingDeclares.append((topology, done))
        case .consume(let request):
            guard consumer == nil else {
                request.started.resume(throwing: AMQPError.protocolError("this connection already has a consumer"))
                return
            }
            consumer = ConsumerState(request: request, tag: nil, retryAt: nil)
            pendingConsumerStart = request.started
        case .maintenance(_, let done):
            done.resume(throwing: AMQPError.connectionLost("not connected"))
        case .cancelConsumer(let done):
            consumer?.request.deliveries.finish()
            consumer = nil
            done.resume()
        case .close(_, let done):
            closing = (ContinuousClock.now, (closing?.waiting ?? []) + [done])
            finish(with: AMQPError.closed)
        case .run(let job):
            job.runSynchronously(on: executor.asUnownedTaskExecutor())
        }
    }

    /// Answers the declares and the consumer start that waited for the connection.
    private func flushPendingStarts() {
        for (_, done) in pendingDeclares { done.resume() }
        pendingDeclares.removeAll()
        pendingConsumerStart?.resume()
        pendingConsumerStart = nil
    }

    // MARK: Connected

    private func serviceOpenConnection(_ session: RabbitMQSession) throws {
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
        if let closing {
            let drained = outstanding.isEmpty && queuedPublishes.isEmpty && unacked.isEmpty
            if drained || ContinuousClock.now >= closing.deadline {
                if !drained {
                    logger.warning("closing with \(outstanding.count + queuedPublishes.count) publishes unconfirmed and \(unacked.count) deliveries unsettled after the grace period")
                }
                session.close()
                finish(with: AMQPError.closed)
                return
            }
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
    private var pollInterval: Duration {
        if configuration.tls != nil { return .milliseconds(20) } // TLS may hold decrypted bytes poll cannot see.
        var interval = Duration.seconds(1)
        if configuration.heartbeat > .zero { interval = min(interval, configuration.heartbeat / 2) }
        if let closing { interval = min(interval, max(.milliseconds(1), closing.deadline - ContinuousClock.now)) }
        if let retryAt = consumer?.retryAt { interval = min(interval, max(.milliseconds(1), retryAt - ContinuousClock.now)) }
        return interval
    }

    private func handle(_ command: ConnectionCommand, on session: RabbitMQSession) throws {
        switch command {
        case .publish(let pending):
            queuedPublishes.append(pending)
        case .settle(let tag, let deliveryEpoch, let settlement):
            guard deliveryEpoch == epoch.load(ordering: .acquiring), unacked.remove(tag) != nil else { return }
            switch settlement {
            case .ack: acksToSend.append(tag)
            case .nack(let requeue): try session.nack(tag, requeue: requeue)
            case .reject(let requeue): try session.reject(tag, requeue: requeue)
            }
        case .declare(let topology, let done):
            do {
                try declare(topology, on: session)
                topologies.append(topology)
                done.resume()
            } catch {
                done.resume(throwing: error)
                throw error
            }
        case .consume(let request):
            guard consumer == nil else {
                request.started.resume(throwing: AMQPError.protocolError("this connection already has a consumer"))
                return
            }
            consumer = ConsumerState(request: request, tag: nil, retryAt: nil)
            do {
                try startConsumer(on: session)
                request.started.resume()
            } catch {
                consumer = nil
                request.started.resume(throwing: error)
                throw error
            }
        case .maintenance(let operation, let done):
            do {
                switch operation {
                case .deleteQueue(let name): try session.deleteQueue(name)
                case .deleteExchange(let name): try session.deleteExchange(name)
                }
                done.resume()
            } catch {
                done.resume(throwing: error)
                throw error
            }
        case .cancelConsumer(let done):
            let tag = consumer?.tag
            consumer?.tag = nil
            consumer?.retryAt = nil
            consumer?.cancelled = true
            // Cancelled either way: if the broker call fails, the channel or connection is gone
            // and its recovery does not start a cancelled consumer again.
            defer { done.resume() }
            if let tag { try session.cancel(consumerTag: tag) }
        case .close(let grace, let done):
            closing = (min(closing?.deadline ?? .now + grace, .now + grace), (closing?.waiting ?? []) + [done])
            if let tag = consumer?.tag {
                try session.cancel(consumerTag: tag)
                consumer?.tag = nil
                consumer?.retryAt = nil
            }
        case .run(let job):
            job.runSynchronously(on: executor.asUnownedTaskExecutor())
        }
    }

    /// Acks gathered from one batch of commands. When every delivery up to the highest of them is
    /// settled, one `multiple` ack covers them all: one frame instead of one per message.
    private var acksToSend: [UInt64] = []

    private func sendAcks(on session: RabbitMQSession) throws {
        guard let highest = acksToSend.max() else { return }
        defer { acksToSend.removeAll(keepingCapacity: true) }
        if acksToSend.count > 1, unacked.allSatisfy({ $0 > highest }), acksToSend.count == Int(highest - (acksToSend.min() ?? highest) + 1) {
            try session.ack(highest, multiple: true)
        } else {
            for tag in acksToSend { try session.ack(tag, multiple: false) }
        }
    }

    private func sendQueuedPublishes(on session: RabbitMQSession) throws {
        guard outstanding.count < publishWindow, !queuedPublishes.isEmpty else { return }
        // Several publishes at once go out in full TCP segments rather than one per frame.
        let corked = queuedPublishes.count > 1 && publishWindow - outstanding.count > 1
        if corked { session.cork(true) }
        defer { if corked { session.cork(false) } }
        while outstanding.count < publishWindow, let pending = queuedPublishes.popFirst() {
            do {
                try session.publish(pending.message)
            } catch AMQPError.invalidMessage(let reason) {
                // Nothing of it was sent: fail this one, keep the connection and the rest.
                pending.continuation.resume(throwing: AMQPError.invalidMessage(reason))
                continue
            } catch {
                queuedPublishes.prepend(contentsOf: [pending])
                throw error
            }
            outstanding[nextSequence] = pending
            nextSequence += 1
        }
    }

    private func handle(_ frame: amqp_frame_t, on session: RabbitMQSession) throws {
        guard frame.frame_type == AMQP_FRAME_METHOD else { return }
        let method = frame.payload.method
        switch method.id {
        case KILN_AMQP_BASIC_DELIVER:
            let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            let tag = deliver.delivery_tag
            let redelivered = deliver.redelivered != 0
            let exchange = deliver.exchange.string
            let routingKey = deliver.routing_key.string
            let content = try session.readContent()
            guard let consumer else {
                // Nobody consumes any more (cancelled): give it back to the queue at once.
                try session.nack(tag, requeue: true)
                return
            }
            unacked.insert(tag)
            // The broker sends no more until one is settled: the answer is worth waiting for.
            if unacked.count >= Int(consumer.request.prefetch) { expectingCommand = true }
            consumer.request.deliveries.yield(AMQPDelivery(
                body: content.body, properties: content.properties, deliveryTag: tag, redelivered: redelivered,
                exchange: exchange, routingKey: routingKey, epoch: epoch.load(ordering: .acquiring),
                connection: self))
        case KILN_AMQP_BASIC_ACK:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            confirm(upTo: ack.delivery_tag, multiple: ack.multiple != 0, nacked: false)
        case KILN_AMQP_BASIC_NACK:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            confirm(upTo: nack.delivery_tag, multiple: nack.multiple != 0, nacked: true)
        case KILN_AMQP_BASIC_RETURN:
            let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            lastReturn = (returned.exchange.string, returned.routing_key.string, returned.reply_code, returned.reply_text.string)
            _ = try session.readContent()
        case KILN_AMQP_BASIC_CANCEL:
            logger.warning("the broker cancelled the consumer of \(consumer?.request.queue ?? "?"); consuming again in 1 s")
            consumer?.tag = nil
            consumer?.retryAt = ContinuousClock.now + .seconds(1)
        case KILN_AMQP_CHANNEL_CLOSE, KILN_AMQP_CONNECTION_CLOSE:
            throw RabbitMQSession.serverError(method, state: session.state, channel: session.channel)
        case KILN_AMQP_CONNECTION_BLOCKED:
            logger.warning("the broker blocked publishing (memory or disk alarm)")
        case KILN_AMQP_CONNECTION_UNBLOCKED:
            logger.info("the broker unblocked publishing")
        default:
            break
        }
    }

    /// Settles publishes the broker acked or nacked: `tag` alone, or every one up to it.
    private func confirm(upTo tag: UInt64, multiple: Bool, nacked: Bool) {
        let first = multiple ? lowestOutstanding : tag
        guard first <= tag else { return }
        for sequence in first...tag {
            guard let pending = outstanding.removeValue(forKey: sequence) else { continue }
            let message = pending.message
            if nacked {
                pending.continuation.resume(throwing: AMQPError.publishNacked(exchange: message.exchange, routingKey: message.routingKey))
            } else if sequence == tag, let returned = lastReturn,
                      returned.exchange == message.exchange, returned.routingKey == message.routingKey {
                lastReturn = nil
                pending.continuation.resume(throwing: AMQPError.unroutable(
                    exchange: returned.exchange, routingKey: returned.routingKey, code: returned.code, text: returned.text))
            } else {
                pending.continuation.resume()
            }
        }
        // Nothing left in flight: the tasks just resumed are the only source of new work.
        if outstanding.isEmpty && queuedPublishes.isEmpty { expectingCommand = true }
        while lowestOutstanding < nextSequence, outstanding[lowestOutstanding] == nil { lowestOutstanding += 1 }
    }

    /// After the broker closed the channel, the unconfirmed publishes will never be confirmed.
    /// Those to the exchange a 404 names fail with the broker's error; the rest go out again.
    private func failOutstanding(afterChannelError error: AMQPError, text: String) {
        let missingExchange = text.firstMatch(of: /no exchange '([^']*)'/).map { String($0.1) }
        var resend: [PendingPublish] = []
        for (_, pending) in outstanding.sorted(by: { $0.key < $1.key }) {
            if missingExchange == nil || pending.message.exchange == missingExchange {
                pending.continuation.resume(throwing: error)
            } else {
                resend.append(pending)
            }
        }
        outstanding.removeAll()
        queuedPublishes.prepend(contentsOf: resend)
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

    private func sleep(socket: Int32?, until deadline: ContinuousClock.Instant) {
        guard mailbox.prepareToSleep() else { return }
        let remaining = deadline - ContinuousClock.now
        let milliseconds = max(0, Int32(clamping: min(remaining.components.seconds, 86_400) * 1_000 + remaining.components.attoseconds / 1_000_000_000_000_000))
        var descriptors = [pollfd(fd: mailbox.wakeDescriptor, events: Int16(POLLIN), revents: 0)]
        if let socket { descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
        _ = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
        mailbox.awake()
    }

    /// Answers a command that arrived after the loop ended: it fails with `error`, or runs elsewhere.
    private func abandon(_ command: ConnectionCommand, with error: any Error) {
        switch command {
        case .publish(let pending): pending.continuation.resume(throwing: error)
        case .settle: break
        case .declare(_, let done), .maintenance(_, let done): done.resume(throwing: error)
        case .cancelConsumer(let done): done.resume()
        case .consume(let request):
            request.started.resume(throwing: error)
            request.deliveries.finish()
        case .close(_, let done): done.resume()
        case .run(let job): AMQPConnectionExecutor.runElsewhere(job)
        }
    }

    /// Ends the loop: everything still waiting fails with `error`, the consumer's sequence ends.
    private func finish(with error: any Error) {
        finished = true
        session = nil
        for command in mailbox.close() { abandon(command, with: error) }
        for pending in queuedPublishes.removeAll() { pending.continuation.resume(throwing: error) }
        for (_, pending) in outstanding { pending.continuation.resume(throwing: error) }
        outstanding.removeAll()
        for (_, done) in pendingDeclares { done.resume(throwing: error) }
        pendingDeclares.removeAll()
        pendingConsumerStart?.resume(throwing: error)
        pendingConsumerStart = nil
        consumer?.request.deliveries.finish()
        consumer = nil
        for done in closing?.waiting ?? [] { done.resume() }
        closing = nil
    }
}
