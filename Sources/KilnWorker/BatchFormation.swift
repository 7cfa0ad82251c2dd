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
        /// The agent answered it, or the VM failed during it; `elapsedUs` is the host's time for it,
        /// `hostCPUUs` the CPU time the VM used on the host meanwhile (nil where unmeasured).
        case answered(Result<GuestFrame.ExecResult, any Error>, elapsedUs: UInt64, hostCPUUs: UInt64?)
        /// It did not run: a call before it ended the VM's use.
        case notRun
    }

    /// How an invocation's wait for a VM ended.
    enum Decision: Sendable {
        /// Its own wait ended: lent a VM, or failed to be.
        case acquired(Result<Placed<PlacementDecision>, any Error>)
        /// A batch took it first.
        case boarded(Boarding)
    }

    private struct Waiter {
        let key: Key
        let request: GuestFrame.ExecRequest
        /// Ends the invocation's own wait for a VM once a batch took it.
        var stopWaiting: (@Sendable () -> Void)?
        var decided: Decision?
        /// The invocation waiting for ``decided``.
        var awaitingDecision: CheckedContinuation<Decision, Never>?
        /// Its own wait for a VM has ended (``BatchFormation/acquired(_:_:)``).
        var waitEnded = false
        /// It has read ``decided``.
        var read = false
    }

    /// The most calls in one batch.
    let maxCalls: Int
    /// The most payload bytes in one batch: the agent's frame limit is 16 MiB, and a batch of
    /// large calls gains nothing from sharing a wake.
    let maxBytes: Int
    private var waiters: [Ticket: Waiter] = [:]
    /// The waiting invocations of each key, in arrival order.
    private var lines: [Key: [Ticket]] = [:]
    private var outcomes: [Ticket: Outcome] = [:]
    private var awaitingOutcome: [Ticket: CheckedContinuation<Outcome, Never>] = [:]
    private var nextTicket: Ticket = 0

    init(maxCalls: Int, maxBytes: Int = 1 << 20) {
        self.maxCalls = maxCalls
        self.maxBytes = maxBytes
    }

    /// Puts an invocation that is about to wait for a VM in its key's line.
    func enlist(_ key: Key, request: GuestFrame.ExecRequest) -> Ticket {
        nextTicket += 1
        waiters[nextTicket] = Waiter(key: key, request: request)
        lines[key, default: []].append(nextTicket)
        return nextTicket
    }

    /// How to end the invocation's own wait for a VM, when a batch takes it (at once, when one
    /// already has).
    func track(_ ticket: Ticket, stopWaiting: @escaping @Sendable () -> Void) {
        guard waiters[ticket] != nil else { return }
        if case .boarded = waiters[ticket]?.decided { stopWaiting() } else { waiters[ticket]!.stopWaiting = stopWaiting }
    }

    /// The invocation's own wait for a VM ended with `result`. False when a batch had taken it
    /// first: the caller gives back the VM it was lent, if any.
    func acquired(_ ticket: Ticket, _ result: Result<Placed<PlacementDecision>, any Error>) -> Bool {
        guard waiters[ticket] != nil else { return false }
        waiters[ticket]!.waitEnded = true
        if case .boarded = waiters[ticket]!.decided {
            retireIfDone(ticket)
            return false
        }
        removeFromLine(ticket, key: waiters[ticket]!.key)
        decide(ticket, .acquired(result))
        return true
    }

    /// Waits until the invocation was lent a VM (or failed to be), or a batch took it.
    func decision(_ ticket: Ticket) async -> Decision {
        if let decided = waiters[ticket]!.decided {
            waiters[ticket]!.read = true
            retireIfDone(ticket)
            return decided
        }
        return await withCheckedContinuation { waiters[ticket]!.awaitingDecision = $0 }
    }

    /// Takes invocations waiting in `key`'s line into the batch of the invocation that was lent
    /// `lease`, in arrival order, as many as `room` and the byte bound allow, and ends their own waits.
    func board(
        _ key: Key, lease: VMLease, decision: PlacementDecision, leaderBytes: Int, room: Int
    ) -> [(ticket: Ticket, request: GuestFrame.ExecRequest)] {
        let room = min(room, maxCalls - 1)
        guard room > 0, let line = lines[key], !line.isEmpty else { return [] }
        var bytes = leaderBytes
        var taken: [(ticket: Ticket, request: GuestFrame.ExecRequest)] = []
        for ticket in line.prefix(room) {
            let request = waiters[ticket]!.request
            bytes += request.payload.count
            guard bytes <= maxBytes else { break }
            taken.append((ticket, request))
        }
        guard !taken.isEmpty else { return [] }
        lines[key] = line.count > taken.count ? Array(line.dropFirst(taken.count)) : nil
        for (offset, rider) in taken.enumerated() {
            let position = offset + 1
            decide(rider.ticket, .boarded(Boarding(lease: lease.riding(position: position), decision: decision, position: position)))
            waiters[rider.ticket]?.stopWaiting?()
        }
        return taken
    }

    /// Records how a wait ended, and wakes the invocation if it waits for that.
    private func decide(_ ticket: Ticket, _ decided: Decision) {
        waiters[ticket]!.decided = decided
        guard let continuation = waiters[ticket]!.awaitingDecision else { return }
        waiters[ticket]!.awaitingDecision = nil
        waiters[ticket]!.read = true
        retireIfDone(ticket)
        continuation.resume(returning: decided)
    }

    /// An entry goes once both its own wait has ended and its decision was read.
    private func retireIfDone(_ ticket: Ticket) {
        if let waiter = waiters[ticket], waiter.waitEnded, waiter.read { waiters[ticket] = nil }
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
