import Foundation
import KilnPool
import KilnPredict
import KilnVM
import Logging
import Testing

/// An idle VM of a larger profile serves a method of a smaller one when that has none idle, with
/// real process sandboxes.
@Suite("Larger profiles", .serialized)
struct LargerProfileTests {
    let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }
    let large = VMProfile(name: "large", vcpus: 2, memoryMB: 256)

    @Test(.timeLimit(.minutes(1)))
    func aSmallInvocationTakesAnIdleLargeVMBeforeANewSmallOne() async throws {
        let driver = try ProcessSandboxDriver(image: try GuestImage.current(repositoryRoot: SaturationGateTests.root), logger: logger)
        let pool = VMPool(
            driver: driver, backend: "process",
            profiles: [PoolProfile(vm: .small, minIdle: 0, maxIdle: 0, maxTotal: 2), PoolProfile(vm: large, minIdle: 1, maxIdle: 1, maxTotal: 1)],
            placement: SaturationGateTests.FirstCandidate(), predictor: EWMAPredictor(), sizer: PoolSizer(limits: PoolLimits()),
            host: {
                HostSample(cpuUtilization: 0.2, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
            },
            observer: SaturationGateTests.Silent(), logger: logger)
        await pool.replenish()
        let deadline = ContinuousClock.now + .seconds(20)
        while await idle(pool, "large") < 1, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(await idle(pool, "large") == 1)

        // The pool lists it before provisioning a small VM (the placement here takes the first).
        let lease = try await pool.acquire(PlacementRequest(invocationID: "1", method: "echo", profile: VMProfile.small.name), maxWaiting: 8)
        #expect(lease.profile.name == "large" && !lease.cold, "got a \(lease.profile.name) VM, cold: \(lease.cold)")
        #expect(lease.decision.winner.candidate.features.vcpus == 2, "the model is asked about the VM it would run on")
        #expect(try await lease.vm.exec(.init(id: "1", method: "noop", entry: ["kiln:noop"], payload: [], deadlineMs: 1_000)).status == .ok)

        // It goes back to its own pool.
        await pool.release(lease, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        let idleLarge = await idle(pool, "large")
        let idleSmall = await idle(pool, "small")
        #expect(idleLarge == 1 && idleSmall == 0, "idle: large \(idleLarge), small \(idleSmall)")
        await pool.shutdown()
    }

    private func idle(_ pool: VMPool, _ profile: String) async -> Int {
        await pool.status().first { $0.profile == profile }?.idle ?? 0
    }
}
