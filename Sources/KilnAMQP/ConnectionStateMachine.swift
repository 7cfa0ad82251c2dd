/// Where a publish goes: what matching a returned message and a channel error's missing
/// exchange need to know of it.
protocol RoutedPublish {
    var exchange: String { get }
    var routingKey: String { get }
}

/// The bookkeeping of one AMQP connection, without any I/O: the publish window and its confirms,
/// returned messages matched to their publishes, deliveries and the coalescing of their acks,
/// the grace period of a close, and the reconnect backoff. ``ConnectionLoop``'s thread feeds it
/// what happened (a command, a frame, a lost connection, the time) and does what it answers
/// with rabbitmq-c; its tests feed it the same without a broker.
///
/// `Publish` is what waits for a confirm: in the loop, the message and its task's continuation.
struct ConnectionStateMachine<Publish: RoutedPublish> {
    /// How a publish ended, for the task waiting for it.
    enum Answer {
        case confirmed(Publish)
        case failed(Publish, AMQPError)
    }

    /// A settlement to send to the broker.
    enum Settle: Equatable {
        case ack(UInt64, multiple: Bool)
        case nack(UInt64, requeue: Bool)
        case reject(UInt64, requeue: Bool)
    }

    /// What a close asks of the thread now.
    enum CloseStep: Equatable {
        /// Nobody asked to close.
        case open
        /// Publishes or deliveries are still in flight and the grace period has not ended.
        case waitForDrain
        /// Close the connection: everything is settled, or the grace period ended with
        /// `unconfirmed` publishes and `unsettled` deliveries left.
        case closeNow(unconfirmed: Int, unsettled: Int)
    }

    /// What follows a lost connection.
    enum AfterLoss: Equatable {
        /// Try again at this time.
        case reconnect(at: ContinuousClock.Instant)
        /// A close was under way: the connection ends here.
        case finish
    }

    private struct Returned {
        let exchange: String
        let routingKey: String
        let code: UInt16
        let text: String
    }

    /// Publishes sent and not yet confirmed, at most.
    let publishWindow: Int
    /// Whether publishes a lost connection left unconfirmed go out again on the next one
    /// (rather than fail).
    let retryUnconfirmed: Bool
    private let reconnect: AMQPConfiguration.ReconnectPolicy
    /// Draws the jitter of each reconnect delay, 0…1.
    private let random: () -> Double

    /// Bumped whenever delivery tags start over (a new connection or channel, or none):
    /// settlements of deliveries from before are stale.
    private(set) var epoch = 0
    /// Whether a connection is up.
    private(set) var isConnected = false
    private var queued = FIFO<Publish>()
    private var outstanding: [UInt64: Publish] = [:]
    private var nextSequence: UInt64 = 1
    private var lowestOutstanding: UInt64 = 1
    /// The last `basic.return`: the broker sends it just before the confirm of the same publish.
    private var lastReturn: Returned?
    private var unacked = Set<UInt64>()
    /// Acks gathered from one batch of commands, sent together by ``takeAcks()``.
    private var acksToSend: [UInt64] = []
    /// Failed reconnect attempts since the last connection.
    private(set) var reconnectAttempt = 0
    /// When the next reconnect attempt is due.
    private(set) var reconnectAt = ContinuousClock.now
    /// When the grace period of a close under way ends.
    private(set) var closeDeadline: ContinuousClock.Instant?

    init(publishWindow: Int, retryUnconfirmed: Bool, reconnect: AMQPConfiguration.ReconnectPolicy, random: @escaping () -> Double) {
        self.publishWindow = max(1, publishWindow)
        self.retryUnconfirmed = retryUnconfirmed
        self.reconnect = reconnect
        self.random = random
    }

    // MARK: Connections and channels

    /// A connection (or, after a channel error, a channel) is open with confirms on: delivery
    /// tags and publish sequence numbers start over.
    mutating func opened() {
        epoch += 1
        isConnected = true
        reconnectAttempt = 0
        nextSequence = 1
        lowestOutstanding = 1
        forgetDeliveries()
    }

    /// The connection is gone: deliveries are stale (the broker requeued them), and publishes
    /// not confirmed go out again on the next connection, or fail with `error`.
    mutating func connectionLost(_ error: AMQPError, now: ContinuousClock.Instant) -> (answers: [Answer], next: AfterLoss) {
        isConnected = false
        epoch += 1
        forgetDeliveries()
        let unconfirmed = takeOutstanding()
        var answers: [Answer] = []
        if retryUnconfirmed {
            queued.prepend(contentsOf: unconfirmed)
        } else {
            answers = unconfirmed.map { .failed($0, error) }
        }
        guard closeDeadline == nil else { return (answers, .finish) }
        reconnectFailed(now: now)
        return (answers, .reconnect(at: reconnectAt))
    }

    /// A reconnect attempt failed (or the connection was just lost): the next waits longer.
    mutating func reconnectFailed(now: ContinuousClock.Instant) {
        reconnectAt = now + reconnect.delay(attempt: reconnectAttempt, random: random())
        reconnectAttempt += 1
    }

    /// Whether a reconnect attempt is due at `now`.
    func reconnectDue(now: ContinuousClock.Instant) -> Bool {
        now >= reconnectAt
    }

    /// The broker closed the channel with `error` (its text `text`): the unconfirmed publishes
    /// will never be confirmed. Those to the exchange a 404 names fail; the rest go out again
    /// on the channel that replaces it (see ``opened()``).
    mutating func channelClosed(_ error: AMQPError, text: String) -> [Answer] {
        let missingExchange = text.firstMatch(of: /no exchange '([^']*)'/).map { String($0.1) }
        var answers: [Answer] = []
        var resend: [Publish] = []
        for publish in takeOutstanding() {
            if missingExchange == nil || publish.exchange == missingExchange {
                answers.append(.failed(publish, error))
            } else {
                resend.append(publish)
            }
        }
        queued.prepend(contentsOf: resend)
        return answers
    }

    private mutating func forgetDeliveries() {
        unacked.removeAll()
        acksToSend.removeAll()
        lastReturn = nil
    }

    /// The unconfirmed publishes, in the order they were sent; none are left.
    private mutating func takeOutstanding() -> [Publish] {
        let publishes = outstanding.sorted { $0.key < $1.key }.map(\.value)
        outstanding.removeAll()
        return publishes
    }

    // MARK: Publishing

    /// Queues `publish` for sending; answers at once (a failure) when there is no connection
    /// and unconfirmed publishes are not retried.
    mutating func enqueue(_ publish: Publish) -> Answer? {
        guard isConnected || retryUnconfirmed else { return .failed(publish, .connectionLost("not connected")) }
        queued.append(publish)
        return nil
    }

    /// Whether more than one publish will go out now: worth sending in full TCP segments.
    var sendsSeveral: Bool { queued.count > 1 && publishWindow - outstanding.count > 1 }

    /// The next publish to send, while the window has room.
    mutating func nextToSend() -> Publish? {
        guard outstanding.count < publishWindow else { return nil }
        return queued.popFirst()
    }

    /// `publish` (from ``nextToSend()``) went out: it waits for its confirm.
    mutating func sent(_ publish: Publish) {
        outstanding[nextSequence] = publish
        nextSequence += 1
    }

    /// `publish` (from ``nextToSend()``) could not be sent: it goes first next time.
    mutating func notSent(_ publish: Publish) {
        queued.prepend(contentsOf: [publish])
    }

    /// A `basic.return` arrived: the publish whose confirm follows was not routed.
    mutating func returned(exchange: String, routingKey: String, code: UInt16, text: String) {
        lastReturn = Returned(exchange: exchange, routingKey: routingKey, code: code, text: text)
    }

    /// The broker acked (or nacked) publish `tag`, or with `multiple` every one up to it. A
    /// publish whose return came just before its ack fails as unroutable.
    mutating func confirm(upTo tag: UInt64, multiple: Bool, nacked: Bool) -> [Answer] {
        let first = multiple ? lowestOutstanding : tag
        guard first <= tag else { return [] }
        var answers: [Answer] = []
        for sequence in first...tag {
            guard let publish = outstanding.removeValue(forKey: sequence) else { continue }
            if nacked {
                answers.append(.failed(publish, .publishNacked(exchange: publish.exchange, routingKey: publish.routingKey)))
            } else if sequence == tag, let returned = lastReturn,
                      returned.exchange == publish.exchange, returned.routingKey == publish.routingKey {
                lastReturn = nil
                answers.append(.failed(publish, .unroutable(
                    exchange: returned.exchange, routingKey: returned.routingKey, code: returned.code, text: returned.text)))
            } else {
                answers.append(.confirmed(publish))
            }
        }
        while lowestOutstanding < nextSequence, outstanding[lowestOutstanding] == nil { lowestOutstanding += 1 }
        return answers
    }

    /// Whether no publish is queued or waiting for its confirm.
    var nothingInFlight: Bool { outstanding.isEmpty && queued.isEmpty }

    /// Publishes queued or waiting for a confirm.
    var publishesInFlight: Int { outstanding.count + queued.count }

    // MARK: Deliveries

    /// Delivery `tag` was handed to the consumer; returns the deliveries now unsettled.
    mutating func delivered(_ tag: UInt64) -> Int {
        unacked.insert(tag)
        return unacked.count
    }

    /// Deliveries handed out and not yet settled.
    var unsettled: Int { unacked.count }

    /// A task settled delivery `tag` of `deliveryEpoch`. A nack or reject is sent at once; an
    /// ack waits for ``takeAcks()`` to be sent with the others of its batch. Nothing is sent for
    /// a stale or already settled delivery.
    mutating func settle(_ tag: UInt64, epoch deliveryEpoch: Int, _ settlement: Settlement) -> Settle? {
        guard deliveryEpoch == epoch, unacked.remove(tag) != nil else { return nil }
        switch settlement {
        case .ack:
            acksToSend.append(tag)
            return nil
        case .nack(let requeue): return .nack(tag, requeue: requeue)
        case .reject(let requeue): return .reject(tag, requeue: requeue)
        }
    }

    /// The acks gathered since the last call. When they are a run of consecutive tags and no
    /// delivery below the highest is unsettled, one `multiple` ack covers them all: one frame
    /// instead of one per message.
    mutating func takeAcks() -> [Settle] {
        guard let highest = acksToSend.max(), let lowest = acksToSend.min() else { return [] }
        defer { acksToSend.removeAll(keepingCapacity: true) }
        if acksToSend.count > 1, acksToSend.count == Int(highest - lowest + 1), unacked.allSatisfy({ $0 > highest }) {
            return [.ack(highest, multiple: true)]
        }
        return acksToSend.map { .ack($0, multiple: false) }
    }

    // MARK: Closing

    /// A close with `grace` was asked for at `now`; the earliest deadline of several wins.
    mutating func close(grace: Duration, now: ContinuousClock.Instant) {
        closeDeadline = min(closeDeadline ?? now + grace, now + grace)
    }

    /// What the close asks for at `now`.
    func closeStep(now: ContinuousClock.Instant) -> CloseStep {
        guard let closeDeadline else { return .open }
        let unconfirmed = publishesInFlight
        if unconfirmed == 0 && unacked.isEmpty { return .closeNow(unconfirmed: 0, unsettled: 0) }
        return now >= closeDeadline ? .closeNow(unconfirmed: unconfirmed, unsettled: unacked.count) : .waitForDrain
    }

    /// The connection ends: every publish still queued or unconfirmed, for its task to fail.
    mutating func finish() -> [Publish] {
        isConnected = false
        closeDeadline = nil
        forgetDeliveries()
        return queued.removeAll() + takeOutstanding()
    }
}
