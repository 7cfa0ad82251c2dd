// Over 400 lines: lending, provisioning, release and sizing of one actor's state. The waiting
// lines (WaiterQueue.swift) and the provisioning backoff (ProvisionBackoff.swift) are apart;
// borrowing, the saturation gate and the sizing loop are next to come out into parts of their own.
import KilnVM
import Logging
import ServiceLifecycle

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
    public var lastSizing: String
    public var vms: [VM]
}

/// Pools of pre-provisioned VMs, one per profile: it lends VMs to invocations by the placement
/// policy's choice, provisions one for an invocation when that is better than waiting, takes
/// them back by the lifecycle policy (reset and reuse, or destroy), keeps each profile's idle
/// VMs at a target set from demand and host headroom, and reports every decision to its
/// observer.
public actor VMPool: Service {
    private struct Entry {
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

    private struct ProfileState {
        var settings: PoolProfile
        var idle: [Entry] = []
        var busy = 0
        var resetting = 0
        var provisioning = 0
        var targetIdle: Int
        var lastSizing = "minimum"
        var demand: DemandTracker
        var backoff = ProvisionBackoff()


        var total: Int { idle.count + busy + resetting + provisioning }
    }

    private let driver: any MicroVMDriver
    /// The driver's backend: its name goes into results, telemetry and status.
    private let backend: VMBackend
    private let sizer: PoolSizer
    private let host: @Sendable () -> HostSample
    private let observer: any PoolObserver
    private let logger: Logger
    /// Raises and lowers VMs' resources as their methods run; `nil` keeps them fixed.
    public nonisolated let allocator: AdaptiveAllocator?
    private let idleTTL: Duration
    private let provisionConcurrency: Int
    private var profiles: [String: ProfileState]
    private var busy: [String: Entry] = [:]
    /// Invocations waiting because the host's CPU is saturated (any profile), first come first.
    private let lines = WaitingLines()
    /// A background provision ``replenish()`` asked for, to the profile's idle target.
    private struct ProvisionJob: Sendable {
        let profile: String
        let target: Int
    }
    /// What ``replenish()`` asks for and ``run()`` provisions.
    private nonisolated let provisionJobs: AsyncStream<ProvisionJob>
    private nonisolated let provisionQueue: AsyncStream<ProvisionJob>.Continuation
    private var backgroundProvisions = 0
    private var forecaster: ArrivalForecaster
    /// The methods seen per profile, for the forecast.
    private var methodsByProfile: [String: Set<String>] = [:]
    private var closed = false

    /// Creates a pool; it provisions nothing until the first ``acquire(_:policy:maxWaiting:)``,
    /// or until ``replenish()`` asks for VMs while ``run()`` runs.
    /// - Parameters:
    ///   - driver: Makes the VMs.
    ///   - backend: The driver's backend.
    ///   - profiles: The profiles served.
    ///   - sizer: Sets idle targets from demand and headroom.
    ///   - demandWindow: The window demand is measured over.
    ///   - idleTTL: How long a VM above the target may stay idle.
    ///   - forecaster: Forecasts bursts from each method's arrivals.
    ///   - allocator: Adapts VMs' resources to how their methods run.
    ///   - provisionConcurrency: Background provisions at once at most.
    ///   - host: The latest host sample.
    ///   - observer: Hears every decision.
    ///   - logger: For failures.
    public init(
        driver: any MicroVMDriver, backend: VMBackend, profiles: [PoolProfile], sizer: PoolSizer, demandWindow: Duration = .seconds(30),
        idleTTL: Duration = .seconds(10), provisionConcurrency: Int = 2, forecaster: ArrivalForecaster = ArrivalForecaster(),
        allocator: AdaptiveAllocator? = nil, host: @escaping @Sendable () -> HostSample, observer: any PoolObserver,
        logger: Logger
    ) {
        self.forecaster = forecaster
        self.allocator = allocator
        self.driver = driver
        self.backend = backend
        self.sizer = sizer
        self.host = host
        self.observer = observer
        self.logger = logger
        self.idleTTL = idleTTL
        self.provisionConcurrency = max(1, provisionConcurrency)
        (provisionJobs, provisionQueue) = AsyncStream.makeStream(of: ProvisionJob.self)
        self.profiles = Dictionary(uniqueKeysWithValues: profiles.map {
            ($0.vm.name, ProfileState(settings: $0, targetIdle: $0.minIdle, demand: DemandTracker(window: demandWindow)))
        })
    }

    /// Runs the background provisions ``replenish()`` asks for, each a child of this task
    /// group, until graceful shutdown (or ``shutdown()``); then waits for those under way and
    /// destroys every VM. The worker runs it first in its `ServiceGroup`, so that it stops last,
    /// and calls ``shutdown()`` after the group too (a second call finds nothing left).
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await job in provisionJobs {
                    group.addTask { await self.provisionInBackground(job.profile, target: job.target) }
                }
            }
        } onGracefulShutdown: { [provisionQueue] in
            provisionQueue.finish()
        }
        // Cancelled (another service failed), the VMs are left to the owner's `shutdown()`,
        // which then runs where waits for QEMU to exit are not cut short.
        if !Task.isCancelled { await shutdown() }
    }

    /// The VMs at most, over every profile: the most invocations that can run at once.
    public var capacity: Int { profiles.values.reduce(0) { $0 + $1.settings.maxTotal } }

    // MARK: Lending

    /// Lends a VM for `request`: `policy` picks an idle VM or a new one; when it picks neither
    /// (nothing idle, no room for another), the caller waits for a VM to come free, behind at
    /// most `maxWaiting` others.
    public func acquire<Policy: PlacementPolicy>(
        _ request: PlacementRequest, policy: Policy, maxWaiting: Int
    ) async throws -> Placed<Policy.Decision> {
        guard profiles[request.profile] != nil else { throw PoolError.unknownProfile(request.profile) }
        profiles[request.profile]!.demand.recordArrival()
        forecaster.recordArrival(request.method, at: .now)
        methodsByProfile[request.profile, default: []].insert(request.method)
        var heldBefore = false
        var waitedBefore = false
        while true {
            guard !closed else { throw PoolError.shutDown }
            if Task.isCancelled {
                // A wake meant for this invocation goes to the next in line.
                if heldBefore || waitedBefore { wakeWaiter(request.profile, idle: true) }
                throw CancellationError()
            }
            let sample = host()
            if saturated(sample) {
                let waiting = lines.count(.profile(request.profile)) + lines.count(.saturatedHost)
                guard waiting < maxWaiting else { throw PoolError.saturated(profile: request.profile, waiting: waiting) }
                // Woken, but a newer arrival took the VM first: back to the head of the line.
                await lines.wait(in: .saturatedHost, atFront: heldBefore)
                heldBefore = true
                continue
            }
            var candidates: [PlacementCandidate]
            let waiting: Int
            let load: PoolLoad
            do {
                // A copy of the profile's state must not outlive this scope: held across the
                // wait below, it would make every later arrival copy the demand history.
                let state = profiles[request.profile]!
                // Most recently used first: the scorer gives ties to the earliest.
                candidates = state.idle.reversed().map { candidate(for: $0, request) }
                if candidates.isEmpty {
                    // None of its own: an idle VM of a larger profile fits too, rather than a new one.
                    candidates = largerIdleVMs(than: state.settings.vm).map { candidate(for: $0, request) }
                }
                if canProvision(state, sample) {
                    candidates.append(PlacementCandidate(kind: .provision, profile: state.settings.vm))
                }
                waiting = lines.count(.profile(request.profile))
                load = PoolLoad(busy: busy.count, waiting: waiting, idle: state.idle.count, provisioning: state.provisioning)
            }
            if let (chosen, decision) = policy.place(request, among: candidates, load: load, host: sample),
               candidates.indices.contains(chosen) {
                switch candidates[chosen].kind {
                case .idle(let id):
                    let owner = candidates[chosen].profile.name
                    guard let index = profiles[owner]?.idle.firstIndex(where: { $0.vm.id == id }) else { continue }
                    let entry = profiles[owner]!.idle.remove(at: index)
                    return Placed(lease: lend(entry, for: request, cold: false, provisioned: .zero), decision: decision)
                case .provision:
                    return Placed(lease: try await provisionForInvocation(request), decision: decision)
                }
            }
            guard waiting < maxWaiting else {
                throw PoolError.saturated(profile: request.profile, waiting: waiting)
            }
            // Woken, but the VM went to another: back to the head of the line.
            await lines.wait(in: .profile(request.profile), atFront: waitedBefore)
            waitedBefore = true
        }
    }

    /// Whether the host's CPU is saturated and as many VMs as it should keep busy are working.
    /// More idle VMs than the target and no invocation waiting: a smaller profile may borrow one.
    private func hasSurplus(_ state: ProfileState) -> Bool {
        state.idle.count > state.targetIdle && lines.count(.profile(state.settings.vm.name)) == 0
    }

    private func saturated(_ sample: HostSample) -> Bool {
        guard sample.cpuUtilization >= sizer.limits.saturatedCPU else { return false }
        let working = busy.count + profiles.values.reduce(0) { $0 + $1.resetting }
        return working >= sizer.limits.saturatedBusyLimit
    }

    /// Idle VMs that profiles with at least `profile`'s vCPUs and memory can spare: those with
    /// more idle VMs than their target and nothing waiting (a profile's own methods keep its
    /// warm VMs and their runtimes). Smallest profile first, most recently used first within one.
    private func largerIdleVMs(than profile: VMProfile) -> [Entry] {
        profiles.values
            .filter { $0.settings.vm.name != profile.name && $0.settings.vm.vcpus >= profile.vcpus && $0.settings.vm.memoryMB >= profile.memoryMB }
            .filter(hasSurplus)
            .sorted { ($0.settings.vm.vcpus, $0.settings.vm.memoryMB, $0.settings.vm.name) < ($1.settings.vm.vcpus, $1.settings.vm.memoryMB, $1.settings.vm.name) }
            .flatMap { $0.idle.reversed() }
    }

    private func candidate(for entry: Entry, _ request: PlacementRequest) -> PlacementCandidate {
        PlacementCandidate(
            kind: .idle(vm: entry.vm.id), profile: profiles[entry.profile]!.settings.vm, lastMethod: entry.lastMethod,
            uses: entry.uses, loadedDependencies: entry.loadedDependencies,
            affinityMatch: request.affinityKey != nil && entry.lastAffinity == request.affinityKey)
    }

    /// Whether one more VM of the profile fits: under its maximum and above the memory reserve.
    private func canProvision(_ state: ProfileState, _ sample: HostSample) -> Bool {
        guard state.total < state.settings.maxTotal else { return false }
        guard state.backoff.allows(at: .now) else { return false }
        return sample.memoryAvailableMB - sizer.limits.memoryReserveMB >= sizer.limits.memoryPerVMMB
    }

    private func lend(_ entry: Entry, for request: PlacementRequest, cold: Bool, provisioned: Duration) -> VMLease {
        busy[entry.vm.id] = entry
        profiles[entry.profile]!.busy += 1
        report(entry.profile)
        return VMLease(
            vm: entry.vm, profile: profiles[entry.profile]!.settings.vm, cold: cold, reuseCount: entry.uses,
            provisionDuration: provisioned, leasedAt: .now, demandProfile: request.profile, dependencies: request.dependencies)
    }

    private func provisionForInvocation(_ request: PlacementRequest) async throws -> VMLease {
        let profile = profiles[request.profile]!.settings.vm
        profiles[request.profile]!.provisioning += 1
        profiles[request.profile]!.demand.recordColdStart()
        let started = ContinuousClock.now
        do {
            let vm = try await driver.provision(profile)
            let took = ContinuousClock.now - started
            profiles[request.profile]!.provisioning -= 1
            provisioned(vm, profile: profile, reason: "cold start for \(request.method) (\(request.invocationID))")
            await track(vm, profile: request.profile)
            let entry = Entry(vm: vm, profile: request.profile, createdAt: .now, idleSince: .now)
            return lend(entry, for: request, cold: true, provisioned: took)
        } catch {
            profiles[request.profile]!.provisioning -= 1
            provisioningFailed(request.profile, error)
            wakeWaiter(request.profile)
            throw error
        }
    }

    /// Hands a new VM to the allocator with its profile's base allocation.
    private func track(_ vm: any MicroVM, profile: String) async {
        guard let allocator, let settings = profiles[profile]?.settings else { return }
        let isQEMU = if case .qemu = backend { true } else { false }
        let overhead = isQEMU ? QEMUDriver.qemuOverheadMB : 0
        let driverDefault = ResourceLimits(cpus: Double(settings.vm.vcpus), memoryMB: settings.vm.memoryMB + overhead)
        var base = driverDefault
        if let share = settings.cpuShare { base.cpus = share }
        await allocator.register(vm, base: base, driverDefault: driverDefault, memoryAdjustable: backend == .process)
    }

    private func provisioned(_ vm: any MicroVM, profile: VMProfile, reason: String) {
        profiles[profile.name]!.backoff.succeeded()
        observer.vmCreated(CreatedVM(
            id: vm.id, backend: backend.name, profile: profile, provisioning: vm.provisioning, reason: reason, host: host(),
            concurrentProvisions: profiles[profile.name]!.provisioning + 1))
    }

    /// After a failed provision, the profile gets no new VMs for a while (doubling, up to 30 s)
    /// instead of retrying in a hot loop.
    private func provisioningFailed(_ profile: String, _ error: any Error) {
        let delay = profiles[profile]!.backoff.failed(at: .now)
        let failures = profiles[profile]!.backoff.failures
        logger.error("provisioning a \(profile) VM failed (\(failures) in a row); retrying in \(delay): \(error)")
    }

    // MARK: Taking back

    /// Takes a VM back after an invocation: by `lifecycle`, it is reset and returned to the
    /// pool, or destroyed. Returns once the VM is idle again or gone.
    /// - Parameter resetInGuest: The agent answered that it resets the guest right after this
    ///   call (`reset_pending`, for an exec with `reset_after`): the VM needs no reset of its own.
    public func release(
        _ lease: VMLease, method: String, affinityKey: String?, outcome: ExecOutcome, lifecycle: LifecyclePolicy,
        resetInGuest: Bool = false
    ) async {
        guard var entry = busy.removeValue(forKey: lease.vm.id) else { return }
        let profile = entry.profile
        profiles[profile]!.busy -= 1
        entry.uses += 1
        entry.lastMethod = method
        entry.lastAffinity = affinityKey
        entry.loadedDependencies.formUnion(lease.dependencies)
        switch lifecycle.action(after: outcome, uses: entry.uses) {
        case .destroy(let reason):
            profiles[lease.demandProfile]?.demand.recordHold(.now - lease.leasedAt)
            await destroy(entry, reason: reason)
        case .reuse:
            profiles[profile]!.resetting += 1
            let reset: Result<Void, any Error>
            do {
                // A serve-mode runtime stays up for the next call of the same method; the agent
                // kills it before any other method runs in the VM.
                if !resetInGuest { try await entry.vm.reset(keepingServeRuntime: true) }
                reset = .success(())
            } catch {
                reset = .failure(error)
            }
            profiles[profile]!.resetting -= 1
            profiles[lease.demandProfile]?.demand.recordHold(.now - lease.leasedAt)
            switch reset {
            case .success where !closed:
                entry.idleSince = .now
                profiles[profile]!.idle.append(entry)
                wakeWaiter(profile, idle: true)
                report(profile)
            case .success:
                await destroy(entry, reason: "shutdown")
            case .failure(let error):
                logger.warning("reset of \(entry.vm.id) failed: \(error)")
                await destroy(entry, reason: "reset_failed")
            }
        }
        replenish()
    }

    private func destroy(_ entry: Entry, reason: String) async {
        let started = ContinuousClock.now
        await allocator?.forget(entry.vm.id)
        await entry.vm.destroy()
        observer.vmDestroyed(
            id: entry.vm.id, backend: backend.name, profile: entry.profile, reason: reason, lifetime: .now - entry.createdAt,
            uses: entry.uses, took: .now - started)
        // A VM fewer may let a waiting invocation provision one.
        wakeWaiter(entry.profile)
        report(entry.profile)
    }

    /// Wakes the first invocation waiting for a VM of `profile`, and the first waiting for the
    /// saturated host: a VM of `profile` has come free or gone. When it came free (`idle`) and
    /// nothing waits for `profile`, an invocation of a smaller profile that could borrow it
    /// (see ``largerIdleVMs(than:)``) is woken instead, the closest fit first.
    private func wakeWaiter(_ profile: String, idle: Bool = false) {
        lines.resumeFirst(.saturatedHost)
        guard let state = profiles[profile] else { return }
        if lines.resumeFirst(.profile(profile)) { return }
        guard idle, hasSurplus(state) else { return }
        let freed = state.settings.vm
        let smaller = profiles.values
            .filter { $0.settings.vm.name != profile && $0.settings.vm.vcpus <= freed.vcpus && $0.settings.vm.memoryMB <= freed.memoryMB }
            .sorted { ($0.settings.vm.vcpus, $0.settings.vm.memoryMB) > ($1.settings.vm.vcpus, $1.settings.vm.memoryMB) }
        for candidate in smaller where lines.resumeFirst(.profile(candidate.settings.vm.name)) { return }
    }

    private func report(_ profile: String) {
        guard let state = profiles[profile] else { return }
        observer.poolCounts(profile: profile, idle: state.idle.count, busy: state.busy + state.resetting, target: state.targetIdle)
    }

    // MARK: Keeping the pools at target

    /// Starts background provisions until each profile's idle VMs (counting those on their way)
    /// reach its target, within the provisioning concurrency and the host's headroom.
    public func replenish() {
        guard !closed else { return }
        let sample = host()
        for name in profiles.keys.sorted() {
            while backgroundProvisions < provisionConcurrency {
                let state = profiles[name]!
                guard state.idle.count + state.provisioning < state.targetIdle, canProvision(state, sample) else { break }
                profiles[name]!.provisioning += 1
                backgroundProvisions += 1
                provisionQueue.yield(ProvisionJob(profile: name, target: state.targetIdle))
            }
        }
    }

    private func provisionInBackground(_ name: String, target: Int) async {
        let profile = profiles[name]!.settings.vm
        do {
            let vm = try await driver.provision(profile)
            profiles[name]!.provisioning -= 1
            backgroundProvisions -= 1
            provisioned(vm, profile: profile, reason: "replenish to idle target \(target)")
            await track(vm, profile: name)
            if closed {
                await vm.destroy()
                return
            }
            profiles[name]!.idle.append(Entry(vm: vm, profile: name, createdAt: .now, idleSince: .now))
            wakeWaiter(name, idle: true)
            report(name)
        } catch {
            profiles[name]!.provisioning -= 1
            backgroundProvisions -= 1
            provisioningFailed(name, error)
        }
        replenish()
    }

    /// Sets each profile's idle target from recent demand and host headroom (reporting every
    /// change), destroys VMs idle past their TTL at `now` above the target, and replenishes.
    public func resize(now: ContinuousClock.Instant = .now) async {
        guard !closed else { return }
        let sample = host()
        // The host is no longer saturated: the invocations held for it go ahead.
        if !saturated(sample) {
            lines.resumeAll(.saturatedHost)
        }
        for name in profiles.keys.sorted() {
            let state = profiles[name]!
            var demand = profiles[name]!.demand.snapshot()
            let forecast = forecaster.forecast(methods: methodsByProfile[name] ?? [], at: .now)
            demand.forecastWarm = forecast.warmVMs
            demand.forecastReason = forecast.reason
            let decision = PoolSizer(limits: limits(for: state.settings)).decide(
                demand: demand, busy: state.busy + state.resetting, idle: state.idle.count, host: sample)
            profiles[name]!.lastSizing = decision.reason
            if decision.targetIdle != state.targetIdle {
                profiles[name]!.targetIdle = decision.targetIdle
                observer.poolResized(profile: name, from: state.targetIdle, to: decision.targetIdle, reason: decision.reason)
            }
            // Shrink slowly: only VMs idle past their TTL (by `now`), and never below the target.
            while profiles[name]!.idle.count > profiles[name]!.targetIdle,
                  let oldest = profiles[name]!.idle.indices.min(by: { profiles[name]!.idle[$0].idleSince < profiles[name]!.idle[$1].idleSince }),
                  now - profiles[name]!.idle[oldest].idleSince > idleTTL {
                let entry = profiles[name]!.idle.remove(at: oldest)
                await destroy(entry, reason: "idle_ttl")
            }
            report(name)
        }
        await allocator?.relax()
        replenish()
    }

    private func limits(for profile: PoolProfile) -> PoolLimits {
        var limits = sizer.limits
        limits.minIdle = profile.minIdle
        limits.maxIdle = profile.maxIdle
        limits.maxTotal = profile.maxTotal
        return limits
    }

    // MARK: Status and shutdown

    /// Counts and VMs per profile.
    public func status() -> [PoolStatus] {
        let now = ContinuousClock.now
        return profiles.keys.sorted().map { name in
            let state = profiles[name]!
            let idle = state.idle.map {
                PoolStatus.VM(id: $0.vm.id, state: "idle", uses: $0.uses, lastMethod: $0.lastMethod, ageSeconds: (now - $0.createdAt).inSeconds)
            }
            let lent = busy.values.filter { $0.profile == name }.map {
                PoolStatus.VM(id: $0.vm.id, state: "busy", uses: $0.uses, lastMethod: $0.lastMethod, ageSeconds: (now - $0.createdAt).inSeconds)
            }
            return PoolStatus(
                profile: name, backend: backend.name, idle: state.idle.count, busy: state.busy, resetting: state.resetting,
                provisioning: state.provisioning, targetIdle: state.targetIdle, minIdle: state.settings.minIdle,
                maxTotal: state.settings.maxTotal, waiting: lines.count(.profile(state.settings.vm.name)),
                heldForSaturatedHost: lines.count(.saturatedHost), lastSizing: state.lastSizing,
                vms: (idle + lent).sorted { $0.id < $1.id })
        }
    }

    /// Destroys every idle VM and stops lending; VMs still lent are destroyed as they come
    /// back. Call after in-flight invocations have finished, then the driver's `shutdown`.
    public func shutdown() async {
        closed = true
        provisionQueue.finish()
        lines.resumeAll()
        for name in profiles.keys.sorted() {
            let idle = profiles[name]!.idle
            profiles[name]!.idle.removeAll()
            for entry in idle { await destroy(entry, reason: "shutdown") }
        }
        for entry in busy.values { await destroy(entry, reason: "shutdown") }
        busy.removeAll()
        await driver.shutdown()
    }
}
