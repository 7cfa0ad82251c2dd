import KilnVM

/// Lending between profiles: an invocation whose profile has no idle VM may run on an idle VM
/// of a profile at least as large (vCPUs and memory) that can spare it, rather than wait for a
/// new one. A profile spares a VM when it has more idle VMs than its target and nothing waits
/// for it: a profile's own methods keep its warm VMs and their runtimes.
struct Borrowing {
    /// The profiles, by name.
    let profiles: [String: ProfileState]
    /// Invocations waiting for a VM of a profile, by name.
    let waiting: (String) -> Int

    /// Whether `state` has an idle VM to spare.
    func hasSurplus(_ state: ProfileState) -> Bool {
        state.idle.count > state.targetIdle && waiting(state.settings.vm.name) == 0
    }

    /// The idle VMs an invocation of `profile` may borrow: smallest lending profile first, most
    /// recently used first within one.
    func lendableVMs(for profile: VMProfile) -> [PoolEntry] {
        profiles.values
            .filter { $0.settings.vm.name != profile.name && Self.fits(profile, in: $0.settings.vm) }
            .filter(hasSurplus)
            .sorted { Self.size($0.settings.vm) < Self.size($1.settings.vm) }
            .flatMap { $0.idle.reversed() }
    }

    /// The profiles whose waiting invocations may borrow a VM of `freed` that has just come
    /// free, closest fit first; none when `freed` cannot spare it.
    func borrowers(of freed: String) -> [String] {
        guard let state = profiles[freed], hasSurplus(state) else { return [] }
        return profiles.values
            .filter { $0.settings.vm.name != freed && Self.fits($0.settings.vm, in: state.settings.vm) }
            .sorted { Self.size($0.settings.vm) > Self.size($1.settings.vm) }
            .map(\.settings.vm.name)
    }

    /// Whether a method of `small` can run in a VM of `large`.
    private static func fits(_ small: VMProfile, in large: VMProfile) -> Bool {
        large.vcpus >= small.vcpus && large.memoryMB >= small.memoryMB
    }

    /// The order profiles are tried in: by vCPUs, then memory, then name (for a stable order).
    private static func size(_ profile: VMProfile) -> (Int, Int, String) {
        (profile.vcpus, profile.memoryMB, profile.name)
    }
}
