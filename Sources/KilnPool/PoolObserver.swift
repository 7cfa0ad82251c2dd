import KilnVM

/// A VM the pool provisioned, and the host it was provisioned on.
public struct CreatedVM: Sendable {
    public var id: String
    public var backend: String
    public var profile: VMProfile
    /// How the driver made it and how long that took (a snapshot template built first is not in it).
    public var provisioning: Provisioning
    /// Why: replenishing the idle target, a cold start for an invocation.
    public var reason: String
    /// The host when it was done.
    public var host: HostSample
    /// Provisions of the profile under way at the time, this one included.
    public var concurrentProvisions: Int
}

/// Hears about every decision the pool makes, with its reason: the worker turns these into
/// telemetry events and metrics, and teaches its latency model how long provisioning takes.
public protocol PoolObserver: Sendable {
    /// A VM was provisioned.
    func vmCreated(_ vm: CreatedVM)

    /// A VM was destroyed; `reason` is the lifecycle rule or fault that ended it.
    func vmDestroyed(id: String, backend: String, profile: String, reason: String, lifetime: Duration, uses: Int, took: Duration)

    /// A pool's idle target changed.
    func poolResized(profile: String, from: Int, to: Int, reason: String)

    /// The pool's counts after a change.
    func poolCounts(profile: String, idle: Int, busy: Int, target: Int)
}
