/// Recent demand for one VM profile, as the worker saw it.
public struct DemandSnapshot: Sendable, Equatable {
    /// Invocations per second placed on this profile over the window.
    public var arrivalRate: Double
    /// Mean predicted time a VM is held per invocation (exec plus reset), seconds.
    public var serviceTime: Double
    /// Invocations that had to wait for a VM to be provisioned, over the window.
    public var coldStarts: Int
    /// The warm VMs the arrival forecast asks for now (bursts expected soon).
    public var forecastWarm: Int
    /// Why the forecast asks for them.
    public var forecastReason: String
    /// The window the figures cover, seconds.
    public var window: Double

    public init(
        arrivalRate: Double, serviceTime: Double, coldStarts: Int, forecastWarm: Int = 0, forecastReason: String = "",
        window: Double
    ) {
        self.arrivalRate = arrivalRate
        self.serviceTime = serviceTime
        self.coldStarts = coldStarts
        self.forecastWarm = forecastWarm
        self.forecastReason = forecastReason
        self.window = window
    }

    /// No demand.
    public static let idle = DemandSnapshot(arrivalRate: 0, serviceTime: 0, coldStarts: 0, window: 0)
}

/// Bounds and reserves for sizing one pool.
public struct PoolLimits: Sendable, Equatable {
    /// Idle VMs kept even without demand.
    public var minIdle: Int
    /// The idle target's ceiling, whatever demand asks for.
    public var maxIdle: Int
    /// VMs (idle and busy) the pool may hold at most.
    public var maxTotal: Int
    /// Memory left to the host and everything else: the pool never provisions into it.
    public var memoryReserveMB: Int
    /// Idle CPU, in cores, the pool leaves free before it provisions more.
    public var cpuReserveCores: Double
    /// What one more VM costs in host memory, MiB.
    public var memoryPerVMMB: Int
    /// Standard deviations of Poisson demand kept warm on top of the mean.
    public var burstAllowance: Double
    /// VMs working at once (running an invocation or being reset), over every profile, while
    /// the host's CPU is saturated; further invocations wait for one of them to be idle again.
    /// On a saturated host more concurrent VMs add no throughput, only wake-ups and cold caches
    /// (under emulation, a VM woken for each call costs twice the CPU of one kept busy).
    public var saturatedBusyLimit: Int
    /// The host CPU utilisation (0…1) from which the host counts as saturated.
    public var saturatedCPU: Double

    public init(
        minIdle: Int = 1, maxIdle: Int = .max, maxTotal: Int = 8, memoryReserveMB: Int = 1_024, cpuReserveCores: Double = 0.25,
        memoryPerVMMB: Int = 128, burstAllowance: Double = 2, saturatedBusyLimit: Int = .max, saturatedCPU: Double = 0.9
    ) {
        self.minIdle = minIdle
        self.maxIdle = maxIdle
        self.maxTotal = maxTotal
        self.memoryReserveMB = memoryReserveMB
        self.cpuReserveCores = cpuReserveCores
        self.memoryPerVMMB = memoryPerVMMB
        self.burstAllowance = burstAllowance
        self.saturatedBusyLimit = saturatedBusyLimit
        self.saturatedCPU = saturatedCPU
    }
}

/// A pool's idle target and why.
public struct SizingDecision: Sendable, Equatable {
    public var targetIdle: Int
    /// Whether the host's reserves, not demand, set the target.
    public var cappedByHost: Bool
    public var reason: String
}

/// Sets a pool's idle target from recent demand, capped by host headroom.
///
/// By Little's law `arrivalRate × serviceTime` VMs are busy on average; the pool keeps that
/// many plus `burstAllowance` standard deviations (Poisson: the square root of the mean) in
/// total, or what the arrival forecast (``ArrivalForecaster``) expects bursts to need, or as
/// many idle VMs as there were cold starts in the demand window, never less than `minIdle` idle. It never plans VMs past the memory reserve, and adds none while
/// idle CPU is under the CPU reserve.
public struct PoolSizer: Sendable {
    public var limits: PoolLimits

    public init(limits: PoolLimits) {
        self.limits = limits
    }

    /// The idle target for a pool with `busy` VMs in use and `idle` waiting.
    public func decide(demand: DemandSnapshot, busy: Int, idle: Int, host: HostSample) -> SizingDecision {
        let concurrent = demand.arrivalRate * demand.serviceTime
        let steady = Int((concurrent + limits.burstAllowance * concurrent.squareRoot()).rounded(.up))
        // The cold starts in the window are invocations that found no idle VM: at least as many.
        var wantedIdle = max(limits.minIdle, steady - busy, demand.forecastWarm, demand.coldStarts)
        var reason = String(
            format: "demand %.1f/s x %.3f s = %.2f busy; %d cold starts in %.0f s; forecast %d warm",
            demand.arrivalRate, demand.serviceTime, concurrent, demand.coldStarts, demand.window, demand.forecastWarm)
        if !demand.forecastReason.isEmpty { reason += " (\(demand.forecastReason))" }

        if wantedIdle > limits.maxIdle {
            wantedIdle = limits.maxIdle
            reason += "; held at max_idle \(limits.maxIdle)"
        }
        wantedIdle = min(wantedIdle, max(0, limits.maxTotal - busy))
        var capped = false
        // Memory: what is free beyond the reserve, in VMs, on top of those that already exist.
        let spareMemory = host.memoryAvailableMB - limits.memoryReserveMB
        let affordable = idle + max(0, spareMemory / max(limits.memoryPerVMMB, 1))
        if wantedIdle > affordable {
            wantedIdle = affordable
            capped = true
            reason += "; capped by memory (\(host.memoryAvailableMB) MiB free, \(limits.memoryReserveMB) MiB reserved)"
        }
        // CPU: provisioning takes CPU; without spare cores keep what exists.
        if wantedIdle > idle && host.idleCores < limits.cpuReserveCores {
            wantedIdle = idle
            capped = true
            reason += String(format: "; held by CPU (%.2f idle cores, %.2f reserved)", host.idleCores, limits.cpuReserveCores)
        }
        return SizingDecision(targetIdle: max(0, wantedIdle), cappedByHost: capped, reason: reason)
    }
}
