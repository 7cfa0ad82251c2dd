import KilnVM

/// Hears about every decision the pool makes, with its reason: the worker turns these into
/// telemetry events and metrics.
public protocol PoolObserver: Sendable {
    /// A VM was provisioned; `reason` says why (replenishing the idle target, a cold start).
    func vmCreated(id: String, backend: String, profile: VMProfile, provisioning: Provisioning, reason: String)

    /// A VM was destroyed; `reason` is the lifecycle rule or fault that ended it.
    func vmDestroyed(id: String, backend: String, profile: String, reason: String, lifetime: Duration, uses: Int, took: Duration)

    /// A pool's idle target changed.
    func poolResized(profile: String, from: Int, to: Int, reason: String)

    /// The pool's counts after a change.
    func poolCounts(profile: String, idle: Int, busy: Int, target: Int)
}
