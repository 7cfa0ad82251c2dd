import Synchronization

/// Invocations waiting for a VM, first come first served: each waits on a continuation under
/// a ticket of its own, so that one whose task is cancelled can leave the line wherever it is
/// (it is resumed at once, and finds itself cancelled). A value ``WaitingLines`` keeps behind
/// its lock; every operation is O(waiters) at worst, and the lines are short (`maxWaiting`).
struct WaiterQueue {
    /// A place in the line.
    typealias Ticket = UInt64

    private var waiting: [(ticket: Ticket, continuation: CheckedContinuation<Void, Never>)] = []
    private var nextTicket: Ticket = 0

    /// How many wait.
    var count: Int { waiting.count }

    /// A new ticket, before the waiter suspends (so that a cancellation that comes before it is
    /// in line can still name it).
    mutating func issueTicket() -> Ticket {
        nextTicket &+= 1
        return nextTicket
    }

    /// Puts a waiter in line: at the back, or at the front for one that was woken but lost the
    /// VM to a newer arrival.
    mutating func enqueue(_ ticket: Ticket, _ continuation: CheckedContinuation<Void, Never>, atFront: Bool) {
        if atFront {
            waiting.insert((ticket, continuation), at: 0)
        } else {
            waiting.append((ticket, continuation))
        }
    }

    /// Takes the first in line out of it, to be woken; nil when nobody waits.
    mutating func takeFirst() -> CheckedContinuation<Void, Never>? {
        waiting.isEmpty ? nil : waiting.removeFirst().continuation
    }

    /// Takes the waiter holding `ticket` out of line, wherever it is, to be woken; nil when it
    /// is not in line (already woken, or not yet in it).
    mutating func take(_ ticket: Ticket) -> CheckedContinuation<Void, Never>? {
        guard let index = waiting.firstIndex(where: { $0.ticket == ticket }) else { return nil }
        return waiting.remove(at: index).continuation
    }

    /// Takes everyone out of line, to be woken (at shutdown, or when the host is no longer saturated).
    mutating func takeAll() -> [CheckedContinuation<Void, Never>] {
        defer { waiting.removeAll() }
        return waiting.map(\.continuation)
    }
}

/// The lines invocations wait in — the saturated host's and one per profile — behind a lock,
/// so that a cancellation handler (which runs synchronously, on whatever thread cancels) can
/// take its invocation out of line at once, without a hop to the pool's actor.
final class WaitingLines: Sendable {
    /// A line.
    enum Line: Hashable, Sendable {
        /// Invocations of any profile held while the host's CPU is saturated.
        case saturatedHost
        /// Invocations waiting for a VM of the profile of that name.
        case profile(String)
    }

    private let lines = Mutex([Line: WaiterQueue]())

    /// How many wait in `line`.
    func count(_ line: Line) -> Int {
        lines.withLock { $0[line]?.count ?? 0 }
    }

    /// Waits in `line` until woken, or until the calling task is cancelled: it then leaves the
    /// line at once (the caller finds the cancellation when it looks again). At the front for
    /// one that was woken but lost the VM to a newer arrival. It joins the line on the caller's
    /// actor (`isolation`), before that actor runs anything else: a wake or a shutdown between
    /// the decision to wait and the joining would be lost.
    func wait(in line: Line, atFront: Bool, isolation: isolated (any Actor)? = #isolation) async {
        let ticket = lines.withLock { $0[line, default: WaiterQueue()].issueTicket() }
        await withTaskCancellationHandler(operation: {
            await withCheckedContinuation(isolation: isolation) { continuation in
                let cancelledBeforeInLine = lines.withLock { queues in
                    queues[line, default: WaiterQueue()].enqueue(ticket, continuation, atFront: atFront)
                    // Cancelled before it was in line: the handler found nothing to resume.
                    return Task.isCancelled ? queues[line]!.take(ticket) : nil
                }
                cancelledBeforeInLine?.resume()
            }
        }, onCancel: {
            lines.withLock { $0[line]?.take(ticket) }?.resume()
        }, isolation: isolation)
    }

    /// Wakes the first in `line`; false when nobody waits there.
    ///
    /// Continuations are resumed outside the lock, here and everywhere: resuming one takes its
    /// task's status lock, which a task being cancelled holds while its handler above waits for
    /// this lock.
    @discardableResult
    func resumeFirst(_ line: Line) -> Bool {
        guard let first = lines.withLock({ $0[line]?.takeFirst() }) else { return false }
        first.resume()
        return true
    }

    /// Wakes everyone in every line.
    func resumeAll() {
        let everyone = lines.withLock { queues in Array(queues.keys).flatMap { queues[$0]!.takeAll() } }
        for waiter in everyone { waiter.resume() }
    }

    /// Wakes everyone in `line`.
    func resumeAll(_ line: Line) {
        for waiter in lines.withLock({ $0[line]?.takeAll() ?? [] }) { waiter.resume() }
    }
}
