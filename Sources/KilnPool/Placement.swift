import KilnVM

/// What the scheduler is placing: one invocation of a method.
public struct PlacementRequest: Sendable, Equatable {
    public var invocationID: String
    public var method: String
    /// The VM profile the method runs in.
    public var profile: String
    /// The invocation's affinity key, if any.
    public var affinityKey: String?
    /// Names of what the method needs beyond its code (its runtime, data files): a VM that ran
    /// it has them loaded, which the candidates report.
    public var dependencies: Set<String>
    /// The invocation asked for a VM before and did not run (its batch ended before its call):
    /// its arrival was counted then, and the demand figures must not count it twice.
    public var placedAgain: Bool

    public init(
        invocationID: String, method: String, profile: String, affinityKey: String? = nil, dependencies: Set<String> = [],
        placedAgain: Bool = false
    ) {
        self.invocationID = invocationID
        self.method = method
        self.profile = profile
        self.affinityKey = affinityKey
        self.dependencies = dependencies
        self.placedAgain = placedAgain
    }
}

/// Somewhere an invocation could run: an idle VM of the pool, or a VM provisioned for it, with
/// what the pool knows of it. The placement policy judges it; the pool knows nothing of how.
public struct PlacementCandidate: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// An idle VM, by id.
        case idle(vm: String)
        /// A VM provisioned now, for this invocation.
        case provision
    }

    public var kind: Kind
    /// The VM's profile (a larger profile's idle VM may serve a smaller profile's method).
    public var profile: VMProfile
    /// The method the VM ran last; `nil` for a VM that ran nothing (or does not exist yet).
    public var lastMethod: String?
    /// Invocations the VM ran.
    public var uses: Int
    /// The dependency names of the methods it ran (see ``PlacementRequest/dependencies``).
    public var loadedDependencies: Set<String>
    /// Whether the VM last served the invocation's affinity key.
    public var affinityMatch: Bool

    public init(
        kind: Kind, profile: VMProfile, lastMethod: String? = nil, uses: Int = 0, loadedDependencies: Set<String> = [],
        affinityMatch: Bool = false
    ) {
        self.kind = kind
        self.profile = profile
        self.lastMethod = lastMethod
        self.uses = uses
        self.loadedDependencies = loadedDependencies
        self.affinityMatch = affinityMatch
    }
}

/// The pool at the moment of a placement.
public struct PoolLoad: Sendable, Equatable {
    /// VMs lent to invocations, over every profile.
    public var busy: Int
    /// Invocations of the request's profile waiting for a VM.
    public var waiting: Int
    /// Idle VMs of the request's profile.
    public var idle: Int
    /// VMs of the request's profile being provisioned.
    public var provisioning: Int

    public init(busy: Int, waiting: Int, idle: Int, provisioning: Int) {
        self.busy = busy
        self.waiting = waiting
        self.idle = idle
        self.provisioning = provisioning
    }
}

/// Chooses among the candidates for an invocation. The pool builds the candidates (its idle
/// VMs of the profile, or a larger profile's spare ones, and a new VM when the host has room);
/// the policy judges them, and its decision comes back with the lease.
public protocol PlacementPolicy: Sendable {
    /// What the policy says about its choice (the scores, for the result and the history).
    associatedtype Decision: Sendable

    /// The choice among `candidates`, or `nil` to wait for a VM to come free.
    /// - Parameters:
    ///   - request: What is being placed.
    ///   - candidates: Idle VMs, most recently used first, and `.provision` when a new VM fits.
    ///   - load: The pool's counts now.
    ///   - host: The latest host sample.
    /// - Returns: The index of the chosen candidate in `candidates`, and the decision.
    func place(
        _ request: PlacementRequest, among candidates: [PlacementCandidate], load: PoolLoad, host: HostSample
    ) -> (chosen: Int, decision: Decision)?
}
