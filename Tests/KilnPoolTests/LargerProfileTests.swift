import Foundation
import KilnPool
import KilnVM
import Logging
import Testing

/// An idle VM that a larger profile can spare serves a method of a smaller one when that has none
/// idle, with real process sandboxes.
@Suite("Larger profiles", .serialized)
struct LargerProfileTests {
    let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }
    let large = VMProfile(name: "large", vcpus: 2, memoryMB: 256)

    @Test(.timeLimit(.minutes(1)))
    func aSmallInvocationBorrowsALargeVMTheLargeProfileCanSpare() async throws {
        let driver = try ProcessSandboxDriver(image: try GuestImage.current(repositoryRoot: SaturationGateTests.root), logger: logger)
        let pool = VMPool(
            driver: driver, backend: .process,
            profiles: [PoolProfile(vm: .small, minIdle: 0, maxIdle: 0, maxTotal: 2), PoolProfile(vm: large, minIdle: 1, maxIdle: 1, maxTotal: 2)],
            sizer: PoolSizer(limits: PoolLimits()),
            host: {
                HostSample(cpuUtilization: 0.2, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
            },
            observer: SaturationGateTests.Silent(), logger: logger)
        // The pool's service runs the background provisions that replenish asks for.
        async let running: Void = pool.run()
        try await replenished(pool, large: 1)

        // At its target the large profile keeps its VM for its own methods: the small invocation
        // gets a new small VM (the placement here takes the first candidate the pool lists).
        let own = try await pool.acquire(request("1", profile: VMProfile.small.name), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8).lease
        #expect(own.profile.name == "small" && own.cold, "got a \(own.profile.name) VM, cold: \(own.cold)")
        await pool.release(own, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy(freshVM: true))

        // One large VM over its target: the small invocation borrows it rather than wait for a new VM.
        let largeLease = try await pool.acquire(request("2", profile: large.name), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8).lease
        try await replenished(pool, large: 1)
        await pool.release(largeLease, method: "big", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        #expect(await idle(pool, "large") == 2)
        let placed = try await pool.acquire(request("3", profile: VMProfile.small.name), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8)
        let borrowed = placed.lease
        #expect(borrowed.profile.name == "large" && !borrowed.cold, "got a \(borrowed.profile.name) VM, cold: \(borrowed.cold)")
        #expect(placed.decision.profile.vcpus == 2, "the policy is shown the VM it would run on")
        #expect(try await borrowed.vm.exec(.init(id: "3", method: "noop", entry: ["kiln:noop"], payload: [], deadlineMs: 60_000)).status == .ok)

        // It goes back to its own pool.
        await pool.release(borrowed, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        let idleLarge = await idle(pool, "large")
        let idleSmall = await idle(pool, "small")
        #expect(idleLarge == 2 && idleSmall == 0, "idle: large \(idleLarge), small \(idleSmall)")
        await pool.shutdown()
        try await running
    }

    private func request(_ id: String, profile: String) -> PlacementRequest {
        PlacementRequest(invocationID: id, method: profile == large.name ? "big" : "echo", profile: profile)
    }

    /// Replenishes and waits until the large profile has `count` idle VMs.
    private func replenished(_ pool: VMPool, large count: Int) async throws {
        await pool.replenish()
        let deadline = ContinuousClock.now + .seconds(180)
        while await idle(pool, "large") < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(await idle(pool, "large") == count)
    }

    private func idle(_ pool: VMPool, _ profile: String) async -> Int {
        await pool.status().first { $0.profile == profile }?.idle ?? 0
    }
}
