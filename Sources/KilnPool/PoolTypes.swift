import KilnVM

/// One VM profile the pool serves, with its bounds.
public struct PoolProfile: Sendable, Equatable {
    public var vm: VMProfile
    /// Idle VMs kept even without demand.
    public var minIdle: Int
    /// The idle target's ceiling, whatever demand and the forecast ask for; 0 turns
    /// pre-warming off (VMs back from a run still wait out their idle TTL).
    public var maxIdle: Int
    /// VMs of this profile at most: idle, busy, resetting and being provisioned.
    public var maxTotal: Int
    /// The CPU quota a VM starts with, in cores; `nil` leaves the driver's (one core per vCPU).
    /// Lower values pack more VMs on a host; the adaptive allocator raises a VM whose methods
    /// run slower than predicted.
    public var cpuShare: Double?

    public init(vm: VMProfile, minIdle: Int = 1, maxIdle: Int = 8, maxTotal: Int = 8, cpuShare: Double? = nil) {
        self.vm = vm
        self.minIdle = minIdle
        self.maxIdle = maxIdle
        self.maxTotal = maxTotal
        self.cpuShare = cpuShare
    }
}

/// A VM lent to one invocation. Give it back with ``VMPool/release(_:method:affinityKey:outcome:lifecycle:resetInGuest:)``.
public struct VMLease: Sendable {
    public let vm: any MicroVM
    public let profile: VMProfile
    /// Whether the VM was provisioned for this invocation (a cold start).
    public let cold: Bool
    /// Invocations the VM ran before this one.
    public let reuseCount: Int
    /// Time spent provisioning for this invocation; zero when warm.
    public let provisionDuration: Duration
    let leasedAt: ContinuousClock.Instant
    /// The profile the invocation asked for, whose demand its hold time counts in (a VM
    /// borrowed from a larger profile is not that profile's).
    let demandProfile: String
    /// What the invocation's method needs beyond its code: the VM has it loaded afterwards.
    let dependencies: Set<String>
}

extension VMLease {
    /// The lease as the call at `position` of a batch on it sees it (0 is the call that
    /// acquired it): warm, and after the calls before it.
    public func riding(position: Int) -> VMLease {
        guard position > 0 else { return self }
        return VMLease(
            vm: vm, profile: profile, cold: false, reuseCount: reuseCount + position, provisionDuration: .zero, leasedAt: leasedAt,
            demandProfile: demandProfile, dependencies: dependencies)
    }
}

/// A VM lent by ``VMPool/acquire(_:policy:maxWaiting:)``, with the placement policy's decision.
public struct Placed<Decision: Sendable>: Sendable {
    public let lease: VMLease
    public let decision: Decision
}

/// Why the pool could not lend a VM.
public enum PoolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No profile of that name.
    case unknownProfile(String)
    /// Every VM is busy, none can be added, and the local queue is full.
    case saturated(profile: String, waiting: Int)
    /// The pool is shutting down.
    case shutDown

    public var description: String {
        switch self {
        case .unknownProfile(let name): return "no VM profile named '\(name)'"
        case .saturated(let profile, let waiting): return "pool '\(profile)' is saturated with \(waiting) invocations waiting"
        case .shutDown: return "the VM pool is shutting down"
        }
    }
}

/// What `kiln pool status` shows for one profile.
public struct PoolStatus: Sendable, Codable, Equatable {
    public struct VM: Sendable, Codable, Equatable {
        public var id: String
        public var state: String
        public var uses: Int
        public var lastMethod: String?
        public var ageSeconds: Double
    }

    public var profile: String
    public var backend: String
    public var idle: Int
    public var busy: Int
    public var resetting: Int
    public var provisioning: Int
    public var targetIdle: Int
    public var minIdle: Int
    public var maxTotal: Int
    public var waiting: Int
    /// Invocations of any profile held because the host's CPU is saturated (the same figure in
    /// every profile's status).
    public var heldForSaturatedHost: Int
    /// Invocations that asked for a VM of this profile, per second over the sizer's demand
    /// window (absent from workers older than this field).
    public var arrivalsPerSecond: Double?
    public var lastSizing: String
    public var vms: [VM]
}
