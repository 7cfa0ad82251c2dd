/// When a profile may try to provision again after failures: 500 ms after the first, doubling
/// with each failure in a row up to 30 s, and at once after a success. A value the pool keeps
/// per profile; the clock is passed in.
struct ProvisionBackoff: Sendable, Equatable {
    /// Failures since the last success.
    private(set) var failures = 0
    /// Before this, no provision is tried.
    private(set) var retryAfter: ContinuousClock.Instant?

    /// The longest wait between tries.
    static let ceiling = Duration.seconds(30)

    /// True when a provision may be tried at `now`.
    func allows(at now: ContinuousClock.Instant) -> Bool {
        retryAfter.map { now >= $0 } ?? true
    }

    /// A provision failed at `now`; returns how long the next try waits.
    @discardableResult
    mutating func failed(at now: ContinuousClock.Instant) -> Duration {
        failures += 1
        let delay = min(Self.ceiling, .milliseconds(250 << min(failures, 7)))
        retryAfter = now + delay
        return delay
    }

    /// A provision succeeded: the next may come at once.
    mutating func succeeded() {
        failures = 0
        retryAfter = nil
    }
}
