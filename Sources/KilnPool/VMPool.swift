// The pool's actor: its state, lending, provisioning for an invocation, taking back and shutdown.
// Its parts: the public values (PoolTypes.swift), each profile's VMs and counts
// (PoolInventory.swift), the waiting lines (WaiterQueue.swift), lending between profiles
// (Borrowing.swift), the saturation gate (SaturationGate.swift), the provisioning backoff
// (ProvisionBackoff.swift), and the sizing loop with background provisioning (VMPool+Sizing.swift).
import KilnVM
import Logging
import ServiceLifecycle

/// Pools of pre-provisioned VMs, one per profile: it lends VMs to invocations by the placement
/// policy's choice, provisions one for an invocation when that is better than waiting, takes
/// them back by the lifecycle policy (reset and reuse, or destroy), keeps each profile's idle
/// VMs at a target set from demand and host headroom, and reports every decision to its
/// observer.
public actor VMPool: Service {
    let driver: any MicroVMDriver
    /// The driver's backend: its name goes into results, telemetry and status.
    let backend: VMBackend
    let sizer: PoolSizer
    private let gate: SaturationGate
    let host: @Sendable () -> HostSample
    let observer: any PoolObserver
    let logger: Logger
    /// Raises and lowers VMs' resources as their methods run; `nil` keeps them fixed.
    public nonisolated let allocator: AdaptiveAllocator?
    let idleTTL: Duration
    let provisionConcurrency: Int
    var profiles: [String: ProfileState]
    var busy: [String: PoolEntry] = [:]
    /// Invocations waiting because the host's CPU is saturated (any profile), first come first.
    let lines = WaitingLines()
    /// A background provision ``replenish()`` asked for, to the profile's idle target.
    struct ProvisionJob: Sendable {
        let profile: String
        let target: Int
    }
    /// What ``replenish()`` asks for and ``run()`` provisions.
    private nonisolated let provisionJobs: AsyncStream<ProvisionJob>
    nonisolated let provisionQueue: AsyncStream<ProvisionJob>.Continuation
    var backgroundProvisions = 0
    var forecaster: ArrivalForecaster
    /// The methods seen per profile, for the forecast.
    var methodsByProfile: [String: Set<String>] = [:]
    var closed = false

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
        self.gate = SaturationGate(limits: sizer.limits)
        self.host = host
        self.observer = observer
        self.logger = logger
        self.idleTTL = idleTTL
        self.provisionConcurrency = max(1, provisionConcurrency)
        (provisionJobs, provisionQueue) = AsyncStream.makeStream(of: ProvisionJob.self)
        self.profiles = Dictionary(uniqueKeysWithValues: profiles.map {
            ($0.vm.name, ProfileState(settings: $0, demandWindow: demandWindow))
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
        if !request.placedAgain {
            profiles[request.profile]!.demand.recordArrival()
            forecaster.recordArrival(request.method, at: .now)
        }
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
                    candidates = borrowing.lendableVMs(for: state.settings.vm).map { candidate(for: $0, request) }
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

    /// Lending between profiles, over the profiles as they are now.
    private var borrowing: Borrowing {
        Borrowing(profiles: profiles) { [lines] in lines.count(.profile($0)) }
    }

    /// Whether a VM of this pool, idle or lent, last served `affinityKey`.
    public func hasServed(affinityKey: String) -> Bool {
        busy.values.contains { $0.lastAffinity == affinityKey }
            || profiles.values.contains { $0.idle.contains { $0.lastAffinity == affinityKey } }
    }

    /// Whether the saturation gate holds invocations, with the host at `sample`.
    func saturated(_ sample: HostSample) -> Bool {
        gate.holds(sample, working: busy.count + profiles.values.reduce(0) { $0 + $1.resetting })
    }

    private func candidate(for entry: PoolEntry, _ request: PlacementRequest) -> PlacementCandidate {
        PlacementCandidate(
            kind: .idle(vm: entry.vm.id), profile: profiles[entry.profile]!.settings.vm, lastMethod: entry.lastMethod,
            uses: entry.uses, loadedDependencies: entry.loadedDependencies,
            affinityMatch: request.affinityKey != nil && entry.lastAffinity == request.affinityKey)
    }

    /// Whether one more VM of the profile fits: under its maximum and above the memory reserve.
    func canProvision(_ state: ProfileState, _ sample: HostSample) -> Bool {
        guard state.total < state.settings.maxTotal else { return false }
        guard state.backoff.allows(at: .now) else { return false }
        return sample.memoryAvailableMB - sizer.limits.memoryReserveMB >= sizer.limits.memoryPerVMMB
    }

    private func lend(_ entry: PoolEntry, for request: PlacementRequest, cold: Bool, provisioned: Duration) -> VMLease {
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
            // Not cancelled with its invocation (one that rides in another's batch leaves its
            // own wait): a boot half done is wasted, a finished one serves the next.
            let driver = driver
            let vm = try await Task { try await driver.provision(profile) }.value
            let took = ContinuousClock.now - started
            profiles[request.profile]!.provisioning -= 1
            provisioned(vm, profile: profile, reason: "cold start for \(request.method) (\(request.invocationID))")
            await track(vm, profile: request.profile)
            let entry = PoolEntry(vm: vm, profile: request.profile, createdAt: .now, idleSince: .now)
            return lend(entry, for: request, cold: true, provisioned: took)
        } catch {
            profiles[request.profile]!.provisioning -= 1
            provisioningFailed(request.profile, error)
            wakeWaiter(request.profile)
            throw error
        }
    }

    /// Hands a new VM to the allocator with its profile's base allocation.
    func track(_ vm: any MicroVM, profile: String) async {
        guard let allocator, let settings = profiles[profile]?.settings else { return }
        var base = ResourceLimits(cpus: Double(settings.vm.vcpus), memoryMB: settings.vm.memoryMB)
        var driverDefault = base
        let memory: MemoryRoom?
        if let qemu = vm as? QEMUMicroVM {
            // The guest's memory moves through its balloon, up to the ceiling it booted with; the
            // cgroup's cap stays at that ceiling.
            let overhead = QEMUDriver.qemuOverheadMB
            base.memoryMB += overhead
            driverDefault.memoryMB = settings.vm.bootMemoryMB + overhead
            memory = settings.vm.memoryCeilingMB.map { MemoryRoom(overheadMB: overhead, ceilingMB: $0 + overhead, canShrink: qemu.canGiveMemoryBack) }
        } else {
            memory = backend == .process ? MemoryRoom(ceilingMB: settings.vm.memoryCeilingMB) : nil
        }
        if let share = settings.cpuShare { base.cpus = share }
        await allocator.register(vm, base: base, driverDefault: driverDefault, memory: memory)
    }

    func provisioned(_ vm: any MicroVM, profile: VMProfile, reason: String) {
        profiles[profile.name]!.backoff.succeeded()
        observer.vmCreated(CreatedVM(
            id: vm.id, backend: backend.name, profile: profile, provisioning: vm.provisioning, reason: reason, host: host(),
            concurrentProvisions: profiles[profile.name]!.provisioning + 1))
    }

    /// After a failed provision, the profile gets no new VMs for a while (doubling, up to 30 s)
    /// instead of retrying in a hot loop.
    func provisioningFailed(_ profile: String, _ error: any Error) {
        let delay = profiles[profile]!.backoff.failed(at: .now)
        let failures = profiles[profile]!.backoff.failures
        logger.error("provisioning a \(profile) VM failed (\(failures) in a row); retrying in \(delay.text): \(error)")
    }

    // MARK: Taking back

    /// Takes a VM back after an invocation: by `lifecycle`, it is reset and returned to the
    /// pool, or destroyed. Returns once the VM is idle again or gone.
    /// - Parameter resetInGuest: The agent answered that it resets the guest right after this
    ///   call (`reset_pending`, for an exec with `reset_after`): the VM needs no reset of its own.
    /// - Parameter calls: The invocations the VM ran under this lease (more than one for a batch).
    public func release(
        _ lease: VMLease, method: String, affinityKey: String?, outcome: ExecOutcome, lifecycle: LifecyclePolicy,
        resetInGuest: Bool = false, calls: Int = 1
    ) async {
        guard var entry = busy.removeValue(forKey: lease.vm.id) else { return }
        let profile = entry.profile
        profiles[profile]!.busy -= 1
        entry.uses += max(1, calls)
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

    /// Takes back a VM that ran nothing under `lease` (its invocation went with another's
    /// batch): it is idle again at once, with no reset.
    public func giveBack(_ lease: VMLease) async {
        guard let entry = busy.removeValue(forKey: lease.vm.id) else { return }
        profiles[entry.profile]!.busy -= 1
        guard !closed else {
            await destroy(entry, reason: "shutdown")
            return
        }
        profiles[entry.profile]!.idle.append(entry)
        wakeWaiter(entry.profile, idle: true)
        report(entry.profile)
    }

    func destroy(_ entry: PoolEntry, reason: String) async {
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
    /// nothing waits for `profile`, an invocation of a smaller profile that could borrow it is
    /// woken instead (see ``Borrowing/borrowers(of:)``).
    func wakeWaiter(_ profile: String, idle: Bool = false) {
        lines.resumeFirst(.saturatedHost)
        guard profiles[profile] != nil else { return }
        if lines.resumeFirst(.profile(profile)) { return }
        guard idle else { return }
        for borrower in borrowing.borrowers(of: profile) where lines.resumeFirst(.profile(borrower)) { return }
    }

    func report(_ profile: String) {
        guard let state = profiles[profile] else { return }
        observer.poolCounts(profile: profile, idle: state.idle.count, busy: state.busy + state.resetting, target: state.targetIdle)
    }

    // MARK: Status and shutdown

    /// Counts and VMs per profile.
    public func status() -> [PoolStatus] {
        let now = ContinuousClock.now
        return profiles.keys.sorted().map { name in
            let rate = profiles[name]!.demand.snapshot(now: now).arrivalRate
            // A zero-length demand window makes it 0/0, which JSON cannot carry.
            let arrivalsPerSecond = rate.isFinite ? rate : 0
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
                heldForSaturatedHost: lines.count(.saturatedHost), arrivalsPerSecond: arrivalsPerSecond, lastSizing: state.lastSizing,
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
