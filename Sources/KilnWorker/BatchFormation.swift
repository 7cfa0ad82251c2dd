import KilnPool
import KilnWire

/// Invocations of one method that wait for a VM at the same time leave together. When one of
/// them is lent a VM, it takes the others still waiting (up to a bound) and sends all of them to
/// that VM in one `exec-batch` frame: one wake of the guest for several calls. Each call keeps
/// its own deadline, result, timing and error; the agent wipes scratch between them.
///
/// Nothing waits to form a batch. An invocation that finds a VM runs at once, alone if no other
/// waits; a batch only takes invocations that were already waiting for a VM, and each of them
/// waits at most for the calls before it in the batch (``maxCalls`` − 1 of them), where it would
/// otherwise have waited for a VM to come free.
actor BatchFormation {
    /// Which invocations may share a batch: the same method, for the same affinity key.
    struct Key: Hashable, Sendable {
        var method: String
        var affinityKey: String?
    }

    /// One invocation's place in the line.
    typealias Ticket = UInt64

    /// What a waiting invocation learns when a batch takes it.
    struct Boarding: Sendable {
        /// The batch's lease, as a call at ``position`` sees it.
        let lease: VMLease
        /// The decision that chose the VM (the leader's).
        let decision: PlacementDecision
        /// Its place in the batch, from 1 (0 is the leader).
        let position: Int
    }

    /// How a call of a batch ended.
    enum Outcome: Sendable {
        /// The agent answered it, or the VM failed during it; `elapsedUs` is the host's time for it.
        case answered(Result<GuestFrame.ExecResult, any Error>, elapsedUs: UInt64)
        /// It did not run: a call before it ended the VM's use.
        case notRun
    }

    private struct Waiter {
        let key: Key
        let request: GuestFrame.ExecRequest
        /// Ends the invocation's own wait for a VM once a batch took it.
        let stopWaiting: @Sendable () -> Void
        var boarding: Boarding?
    }

    /// The most calls in one batch.
    let maxCalls: Int
    private var waiters: [Ticket: Waiter] = [:]
    /// The waiting invocations of each key, in arrival order.
    private var lines: [Key: [Ticket]] = [:]
    private var outcomes: [Ticket: Outcome] = [:]
    private var awaitingOutcome: [Ticket: CheckedContinuation<Outcome, Never>] = [:]
    private var nextTicket: Ticket = 0

    init(maxCalls: Int) {
        self.maxCalls = maxCalls
    }

    /// Puts an invocation that is about to wait for a VM in its key's line.
    /// - Parameter stopWaiting: called when a batch takes it.
    func enlist(_ key: Key, request: GuestFrame.ExecRequest, stopWaiting: @escaping @Sendable () -> Void) -> Ticket {
        nextTicket += 1
        waiters[nextTicket] = Waiter(key: key, request: request, stopWaiting: stopWaiting)
        lines[key, default: []].append(nextTicket)
        return nextTicket
    }

    /// Leaves the line once the invocation's own wait ended: nil when it goes on by itself (it
    /// was lent a VM, or failed to be), its boarding when a batch took it first.
    func leave(_ ticket: Ticket) -> Boarding? {
        guard let waiter = waiters.removeValue(forKey: ticket) else { return nil }
        if waiter.boarding == nil { removeFromLine(ticket, key: waiter.key) }
        return waiter.boarding
    }

    /// Takes up to `room` invocations waiting in `key`'s line into the batch of the invocation
    /// that was lent `lease`, in arrival order, and ends their own waits.
    func board(_ key: Key, lease: VMLease, decision: PlacementDecision, room: Int) -> [(ticket: Ticket, request: GuestFrame.ExecRequest)] {
        let room = min(room, maxCalls - 1)
        guard room > 0, let line = lines[key], !line.isEmpty else { return [] }
        let taken = line.prefix(room)
        lines[key] = line.count > room ? Array(line.dropFirst(room)) : nil
        return taken.enumerated().map { offset, ticket in
            waiters[ticket]!.boarding = Boarding(lease: lease.riding(position: offset + 1), decision: decision, position: offset + 1)
            waiters[ticket]!.stopWaiting()
            return (ticket, waiters[ticket]!.request)
        }
    }

    /// Hands a call's outcome to whichever invocation waits for it.
    func deliver(_ outcome: Outcome, to ticket: Ticket) {
        if let continuation = awaitingOutcome.removeValue(forKey: ticket) {
            continuation.resume(returning: outcome)
        } else {
            outcomes[ticket] = outcome
        }
    }

    /// Waits for a call's outcome (the batch's leader delivers one for every call).
    func outcome(of ticket: Ticket) async -> Outcome {
        if let outcome = outcomes.removeValue(forKey: ticket) { return outcome }
        return await withCheckedContinuation { awaitingOutcome[ticket] = $0 }
    }

    private func removeFromLine(_ ticket: Ticket, key: Key) {
        guard var line = lines[key], let index = line.firstIndex(of: ticket) else { return }
        line.remove(at: index)
        lines[key] = line.isEmpty ? nil : line
    }
}
