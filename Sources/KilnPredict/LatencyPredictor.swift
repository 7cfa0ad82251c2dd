/// Where a VM candidate stands for an invocation: how much of what the method needs is already
/// in place.
public enum VMWarmth: String, Sendable, Hashable, CaseIterable {
    /// The VM ran this method last (its runtime, caches and page cache are warm for it).
    case warmForMethod = "warm_method"
    /// The VM ran another method last.
    case warm
    /// The VM was provisioned and has not run anything yet.
    case fresh
    /// The VM does not exist: it would be provisioned for this invocation.
    case notProvisioned = "cold"
}

/// What is known before an invocation runs: the method, the candidate VM and the host. These are
/// the model's inputs; ``PlacementFeatures/init(invocation:vm:load:)`` builds them from what the
/// pool and the invocation say, so that they are made in one place.
public struct PlacementFeatures: Sendable, Hashable {
    public var method: String
    /// Size of the invocation's `args`, in bytes as received.
    public var argsBytes: Int
    /// The numbers among the top-level `args` (and the lengths of its strings and binaries, as
    /// `key.len`): what usually sets a method's work, such as `ms` or the size of the data. Only
    /// finite values of a sane magnitude (see ``ArgumentFeatures``).
    public var numericArgs: [String: Double]
    public var profile: String
    public var vcpus: Int
    public var memoryMB: Int
    /// `qemu` or `process`.
    public var backend: String
    public var warmth: VMWarmth
    /// Invocations the VM ran before.
    public var reuseCount: Int
    /// Host CPU busy fraction, 0…1.
    public var hostCPU: Double
    /// Memory pressure (PSI some avg10), 0…1.
    public var memoryPressure: Double
    /// CPU contention: the share of time a runnable task waited for a CPU (PSI), 0…1.
    public var cpuPressure: Double
    /// Bytes per second the host receives and sends on its interfaces (loopback excluded).
    public var networkBps: Double
    /// Executions running on the host right now.
    public var concurrentExecutions: Int
    /// Invocations waiting for a VM on this worker.
    public var queueDepth: Int
    /// Idle VMs of the profile, for provisioning estimates.
    public var idleVMs: Int
    /// VMs of the profile being provisioned right now.
    public var provisionsInFlight: Int
    /// What the method declares it needs beyond its code (runtime, files), MiB.
    public var dependencyMB: Double
    /// The part of ``dependencyMB`` the candidate VM has not loaded yet: all of it on a VM that
    /// never ran a method needing them.
    public var unloadedDependencyMB: Double
    /// The invocation's deadline: no prediction goes past it plus the grace (0: none known).
    public var deadlineMs: UInt64

    public init(
        method: String, argsBytes: Int = 0, numericArgs: [String: Double] = [:], profile: String, vcpus: Int = 1,
        memoryMB: Int = 128, backend: String,
        warmth: VMWarmth, reuseCount: Int = 0, hostCPU: Double = 0, memoryPressure: Double = 0, cpuPressure: Double = 0, networkBps: Double = 0,
        concurrentExecutions: Int = 0, queueDepth: Int = 0, idleVMs: Int = 0, provisionsInFlight: Int = 0,
        dependencyMB: Double = 0, unloadedDependencyMB: Double = 0, deadlineMs: UInt64 = 0
    ) {
        self.method = method
        self.argsBytes = argsBytes
        self.numericArgs = numericArgs
        self.profile = profile
        self.vcpus = vcpus
        self.memoryMB = memoryMB
        self.backend = backend
        self.warmth = warmth
        self.reuseCount = reuseCount
        self.hostCPU = hostCPU
        self.memoryPressure = memoryPressure
        self.cpuPressure = cpuPressure
        self.networkBps = networkBps
        self.concurrentExecutions = concurrentExecutions
        self.queueDepth = queueDepth
        self.idleVMs = idleVMs
        self.provisionsInFlight = provisionsInFlight
        self.dependencyMB = dependencyMB
        self.unloadedDependencyMB = unloadedDependencyMB
        self.deadlineMs = deadlineMs
    }

    /// Whether every number in it is finite (a history record may hold anything).
    public var isFinite: Bool {
        hostCPU.isFinite && memoryPressure.isFinite && cpuPressure.isFinite && networkBps.isFinite && dependencyMB.isFinite
            && unloadedDependencyMB.isFinite && numericArgs.values.allSatisfy(\.isFinite)
    }
}

/// A latency estimate, in microseconds, with its spread.
public struct LatencyPrediction: Sendable, Equatable {
    /// Provisioning a VM first; zero for an existing VM.
    public var provisionUs: Double
    /// Running the method.
    public var execUs: Double
    /// One standard deviation of the total, as far as the model can tell.
    public var uncertaintyUs: Double

    public init(provisionUs: Double, execUs: Double, uncertaintyUs: Double) {
        self.provisionUs = provisionUs
        self.execUs = execUs
        self.uncertaintyUs = uncertaintyUs
    }

    /// Provisioning plus execution.
    public var totalUs: Double { provisionUs + execUs }
}

/// What happened: the features before, and the times measured.
public struct ExecutionOutcome: Sendable, Hashable {
    public var features: PlacementFeatures
    /// Time spent provisioning a VM for it; zero when it ran on an existing VM.
    public var provisionUs: Double
    public var execUs: Double
    /// Whether the method completed (a timeout or crash says little about its usual latency).
    public var succeeded: Bool

    public init(features: PlacementFeatures, provisionUs: Double, execUs: Double, succeeded: Bool) {
        self.features = features
        self.provisionUs = provisionUs
        self.execUs = execUs
        self.succeeded = succeeded
    }
}

/// A VM provisioned: how long it took and how busy the host was.
public struct ProvisionOutcome: Sendable, Hashable {
    public var backend: String
    public var profile: String
    /// How the VM was made: `restore` (from a snapshot template), `boot` or `spawn`. A template's
    /// first boot is not a restore and is not learned as one.
    public var mode: String
    /// From the request to the agent's greeting, as the driver measured it (building a missing
    /// snapshot template first is not in it).
    public var durationUs: Double
    public var hostCPU: Double
    public var memoryPressure: Double
    /// Provisions running at the same time, this one included.
    public var concurrentProvisions: Int

    public init(
        backend: String, profile: String, mode: String = "restore", durationUs: Double, hostCPU: Double = 0, memoryPressure: Double = 0,
        concurrentProvisions: Int = 1
    ) {
        self.backend = backend
        self.profile = profile
        self.mode = mode
        self.durationUs = durationUs
        self.hostCPU = hostCPU
        self.memoryPressure = memoryPressure
        self.concurrentProvisions = concurrentProvisions
    }
}

/// Predicts how long an invocation takes on a candidate VM, including one that does not exist
/// yet, and learns from every outcome. Implementations must be cheap: the scheduler asks for
/// every candidate of every invocation.
public protocol LatencyPredictor: Sendable {
    /// The estimate for running `features.method` on the candidate `features` describes.
    func predict(_ features: PlacementFeatures) -> LatencyPrediction

    /// Learns from a finished invocation.
    func observe(_ outcome: ExecutionOutcome)

    /// Learns from a provisioned VM (most are provisioned ahead of demand: the pool keeps them warm).
    func observeProvisioning(_ outcome: ProvisionOutcome)

    /// The history has been replayed into the predictor (``HistoryReplay/replay(_:into:)``):
    /// what it keeps of the last moments, rather than of the method, starts again.
    func historyReplayed()

    /// A short name for logs and explanations, such as `ewma`.
    var name: String { get }
}

extension LatencyPredictor {
    public func historyReplayed() {}
}
