import KilnVM

// The sizing loop and the background provisions it asks for.
extension VMPool {
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

    /// Provisions one VM of profile `name` for its idle target (run by ``run()``, which
    /// ``replenish()`` counted it in).
    func provisionInBackground(_ name: String, target: Int) async {
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
            profiles[name]!.idle.append(PoolEntry(vm: vm, profile: name, createdAt: .now, idleSince: .now))
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
            let decision = PoolSizer(limits: state.limits(within: sizer.limits)).decide(
                demand: demand, busy: state.busy + state.resetting, idle: state.idle.count, host: sample)
            profiles[name]!.lastSizing = decision.reason
            if decision.targetIdle != state.targetIdle {
                profiles[name]!.targetIdle = decision.targetIdle
                observer.poolResized(profile: name, from: state.targetIdle, to: decision.targetIdle, reason: decision.reason)
            }
            // Shrink slowly: only VMs idle past their TTL (by `now`), and never below the target.
            while let expired = profiles[name]!.expiredIdleVM(now: now, ttl: idleTTL) {
                let entry = profiles[name]!.idle.remove(at: expired)
                await destroy(entry, reason: "idle_ttl")
            }
            report(name)
        }
        if let allocator {
            // Only VMs in the idle lists: one lent out may be in a call longer than the quiet period.
            let idle = Set(profiles.values.flatMap { $0.idle.map(\.vm.id) })
            // Off the sizing tick: a balloon takes a while to inflate.
            Task {
                let keepingMemory = await allocator.relax(only: idle)
                if !keepingMemory.isEmpty { await self.replace(idle: keepingMemory) }
            }
        }
        replenish()
    }

    /// Destroys the VMs of `ids` still idle, and provisions in their place as the targets ask:
    /// how a restored VM gives back memory it was raised to.
    func replace(idle ids: Set<String>) async {
        for name in profiles.keys {
            while let index = profiles[name]!.idle.firstIndex(where: { ids.contains($0.vm.id) }) {
                let entry = profiles[name]!.idle.remove(at: index)
                await destroy(entry, reason: "memory_relaxed")
            }
        }
        replenish()
    }
}
