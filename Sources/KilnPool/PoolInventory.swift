import KilnVM

/// One VM the pool holds, idle or lent, with what it has run.
struct PoolEntry {
    let vm: any MicroVM
    let profile: String
    let createdAt: ContinuousClock.Instant
    var uses = 0
    var lastMethod: String?
    var lastAffinity: String?
    /// The dependency names of the methods it ran (see ``PlacementRequest/dependencies``).
    var loadedDependencies: Set<String> = []
    var idleSince: ContinuousClock.Instant
}

/// One profile's VMs and counts: its idle VMs (oldest first), how many are lent, resetting and
/// on their way, its idle target, its demand and its provisioning backoff.
struct ProfileState {
    var settings: PoolProfile
    var idle: [PoolEntry] = []
    var busy = 0
    var resetting = 0
    var provisioning = 0
    var targetIdle: Int
    var lastSizing = "minimum"
    var demand: DemandTracker
    var backoff = ProvisionBackoff()

    init(settings: PoolProfile, demandWindow: Duration) {
        self.settings = settings
        self.targetIdle = settings.minIdle
        self.demand = DemandTracker(window: demandWindow)
    }

    /// Every VM of the profile: idle, lent, resetting and being provisioned.
    var total: Int { idle.count + busy + resetting + provisioning }

    /// The profile's own limits within the pool-wide ones.
    func limits(within pool: PoolLimits) -> PoolLimits {
        var limits = pool
        limits.minIdle = settings.minIdle
        limits.maxIdle = settings.maxIdle
        limits.maxTotal = settings.maxTotal
        return limits
    }

    /// Where the oldest idle VM above the target that has been idle longer than `ttl` at `now`
    /// is, if one is: the sizing loop shrinks a profile one such VM at a time, never below its
    /// target.
    func expiredIdleVM(now: ContinuousClock.Instant, ttl: Duration) -> Int? {
        guard idle.count > targetIdle,
              let oldest = idle.indices.min(by: { idle[$0].idleSince < idle[$1].idleSince }),
              now - idle[oldest].idleSince > ttl
        else { return nil }
        return oldest
    }
}
