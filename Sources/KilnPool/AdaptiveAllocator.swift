import KilnVM
import Logging

/// When and how far to change a VM's resources while it runs.
public struct AllocationPolicy: Sendable, Equatable {
    /// Observed exec time over predicted at or above which an invocation counts as degraded.
    public var degradationRatio: Double
    /// Degraded invocations in a row on one VM before it gets more.
    public var sustained: Int
    /// CPU added per step, in cores.
    public var cpuStep: Double
    /// The most CPU a VM may get, in cores.
    public var maximumCPUs: Double
    /// A VM's peak memory share of its limit above which it gets more memory.
    public var memoryHeadroom: Double
    /// Factor the memory limit grows by per step, up to `maximumMemoryFactor` × the base.
    public var memoryStep: Double
    public var maximumMemoryFactor: Double
    /// Idle time after which a raised VM goes back to its base allocation.
    public var relaxAfter: Duration

    public init(
        degradationRatio: Double = 1.5, sustained: Int = 3, cpuStep: Double = 0.5, maximumCPUs: Double = 2,
        memoryHeadroom: Double = 0.8, memoryStep: Double = 1.5, maximumMemoryFactor: Double = 2, relaxAfter: Duration = .seconds(30)
    ) {
        self.degradationRatio = degradationRatio
        self.sustained = sustained
        self.cpuStep = cpuStep
        self.maximumCPUs = maximumCPUs
        self.memoryHeadroom = memoryHeadroom
        self.memoryStep = memoryStep
        self.maximumMemoryFactor = maximumMemoryFactor
        self.relaxAfter = relaxAfter
    }
}

/// How far a VM's memory may move while it runs.
public struct MemoryRoom: Sendable, Equatable {
    /// The part of the VM's memory limit its methods cannot use (QEMU's own), MiB.
    public var overheadMB: Int
    /// The highest limit the VM may get, MiB, overhead included; nil: the policy's
    /// `maximumMemoryFactor` times the base.
    public var ceilingMB: Int?
    /// Whether the limit may go back down while the VM lives (see `QEMUMicroVM.resize`).
    public var canShrink: Bool

    public init(overheadMB: Int = 0, ceilingMB: Int? = nil, canShrink: Bool = true) {
        self.overheadMB = overheadMB
        self.ceilingMB = ceilingMB
        self.canShrink = canShrink
    }
}

/// Hears every change of a VM's resources.
public protocol AllocationObserver: Sendable {
    func vmReallocated(id: String, from: ResourceLimits, to: ResourceLimits, reason: String)
}

/// Adaptive resource allocation: compares each VM's observed exec times with the predicted
/// ones, raises the CPU quota of a VM whose invocations keep running slower than predicted, and
/// its memory when a method's peak memory nears what the VM has or the guest's OOM killer ended
/// it (the process sandbox's cgroup cap; a QEMU guest's balloon), and lowers them back to the
/// base once the VM has been idle a while (memory only where it can shrink).
public actor AdaptiveAllocator {
    private struct Tracked {
        let vm: any MicroVM
        let base: ResourceLimits
        /// How its memory may move; nil: a larger limit gives its methods nothing (a QEMU guest
        /// without a memory ceiling has the RAM it booted with).
        let memory: MemoryRoom?
        var current: ResourceLimits
        var degradedInARow = 0
        var lastUse: ContinuousClock.Instant = .now
    }

    private let policy: AllocationPolicy
    private let observer: any AllocationObserver
    private let logger: Logger
    private var vms: [String: Tracked] = [:]

    public init(policy: AllocationPolicy, observer: any AllocationObserver, logger: Logger) {
        self.policy = policy
        self.observer = observer
        self.logger = logger
    }

    /// Starts tracking `vm`, applying `base` when it differs from what the driver gave it
    /// (`driverDefault`); `memory` says how far its memory may move (nil: not at all).
    public func register(_ vm: any MicroVM, base: ResourceLimits, driverDefault: ResourceLimits, memory: MemoryRoom?) async {
        if base != driverDefault {
            do {
                try await vm.resize(base)
            } catch {
                logger.warning("could not apply the base allocation to \(vm.id): \(error)")
            }
        }
        vms[vm.id] = Tracked(vm: vm, base: base, memory: memory, current: base)
    }

    public func forget(_ id: String) {
        vms.removeValue(forKey: id)
    }

    /// The current allocation of a tracked VM.
    public func allocation(of id: String) -> ResourceLimits? {
        vms[id]?.current
    }

    /// Learns how an invocation on `id` went against its prediction, and reallocates when the
    /// VM has been degraded for `sustained` invocations in a row (more CPU by a step), or its
    /// memory nears the limit (more memory by a step), or the guest's OOM killer ended the method
    /// (`outOfMemory`: all the memory the VM may have; its time says nothing of the CPU).
    public func observe(vm id: String, predictedUs: Double, actualUs: Double, peakMemoryKB: UInt64, outOfMemory: Bool = false) async {
        guard var tracked = vms[id] else { return }
        tracked.lastUse = .now
        let ratio = predictedUs > 0 ? actualUs / predictedUs : 1
        if !outOfMemory { tracked.degradedInARow = ratio >= policy.degradationRatio ? tracked.degradedInARow + 1 : 0 }
        var wanted = tracked.current
        var reasons: [String] = []
        if tracked.degradedInARow >= policy.sustained, wanted.cpus < policy.maximumCPUs {
            wanted.cpus = min(policy.maximumCPUs, wanted.cpus + policy.cpuStep)
            reasons.append(String(format: "exec %.1fx predicted for %d invocations in a row", ratio, tracked.degradedInARow))
            tracked.degradedInARow = 0
        }
        if let room = tracked.memory {
            let ceiling = room.ceilingMB ?? Int(Double(tracked.base.memoryMB) * policy.maximumMemoryFactor)
            let usable = wanted.memoryMB - room.overheadMB
            let nearTheLimit = Double(peakMemoryKB) / 1_024 >= policy.memoryHeadroom * Double(usable)
            if outOfMemory || nearTheLimit, wanted.memoryMB < ceiling {
                // A run the OOM killer ended failed: the next one gets all there is, at once.
                wanted.memoryMB = outOfMemory
                    ? ceiling : min(ceiling, room.overheadMB + Int((Double(usable) * policy.memoryStep).rounded(.up)))
                reasons.append(outOfMemory
                    ? "the guest ran out of memory at \(usable) MiB"
                    : "peak memory \(peakMemoryKB / 1_024) MiB of \(usable) MiB")
            }
        }
        vms[id] = tracked
        if wanted != tracked.current {
            await apply(wanted, to: id, reason: reasons.joined(separator: "; "))
        }
    }

    /// Returns the VMs of `idle` that have not been used for the policy's `relaxAfter` to their
    /// base allocation, all at once. Only VMs the pool holds idle: one lent out may be in a call
    /// longer than the quiet period.
    /// - Returns: the VMs among them that hold memory they cannot give back (see ``MemoryRoom``):
    ///   their CPU went back, and the pool should replace them to return the memory to the host.
    @discardableResult
    public func relax(only idle: Set<String>, now: ContinuousClock.Instant = .now) async -> Set<String> {
        var keepingMemory: Set<String> = []
        await withTaskGroup(of: Void.self) { group in
            for (id, tracked) in vms where idle.contains(id) && now - tracked.lastUse >= policy.relaxAfter {
                var relaxed = tracked.base
                if tracked.memory?.canShrink == false, tracked.current.memoryMB > relaxed.memoryMB {
                    relaxed.memoryMB = tracked.current.memoryMB
                    keepingMemory.insert(id)
                }
                guard relaxed != tracked.current else { continue }
                let reason = "idle for \(now - tracked.lastUse): back to the base allocation"
                group.addTask { await self.apply(relaxed, to: id, reason: reason) }
            }
        }
        return keepingMemory
    }

    /// Resizes the VM. Its allocation is what was asked at once, so that a decision made while
    /// this one is on its way (the calls of a batch, a relax) starts from it; it goes back when
    /// the VM refuses.
    private func apply(_ limits: ResourceLimits, to id: String, reason: String) async {
        guard let tracked = vms[id] else { return }
        let from = tracked.current
        vms[id]?.current = limits
        do {
            try await tracked.vm.resize(limits)
            observer.vmReallocated(id: id, from: from, to: limits, reason: reason)
        } catch {
            if vms[id]?.current == limits { vms[id]?.current = from }
            logger.warning("could not reallocate \(id) to \(limits.cpus) CPUs, \(limits.memoryMB) MiB: \(error)")
        }
    }
}
