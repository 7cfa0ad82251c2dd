import Foundation
import KilnPool
import KilnVM
import Logging
import Synchronization
import Testing

/// The pool on a saturated host, with real process sandboxes: once as many VMs work as the host
/// should keep busy, an invocation waits for one of them, and then gets that same VM.
@Suite("Saturated host", .serialized)
struct SaturationGateTests {
    /// Takes the first candidate: the pool lists idle VMs most recently used first.
    struct FirstCandidate: PlacementPolicy {
        func place(
            _ request: PlacementRequest, among candidates: [PlacementCandidate], load: PoolLoad, host: HostSample
        ) -> (chosen: Int, decision: PlacementCandidate)? {
            candidates.first.map { (0, $0) }
        }
    }

    struct Silent: PoolObserver {
        func vmCreated(_ vm: CreatedVM) {}
        func vmDestroyed(id: String, backend: String, profile: String, reason: String, lifetime: Duration, uses: Int, took: Duration) {}
        func poolResized(profile: String, from: Int, to: Int, reason: String) {}
        func poolCounts(profile: String, idle: Int, busy: Int, target: Int) {}
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }

    func request(_ id: String) -> PlacementRequest {
        PlacementRequest(invocationID: id, method: "echo", profile: VMProfile.small.name)
    }

    @Test(.timeLimit(.minutes(1)))
    func aSaturatedHostHoldsInvocationsForTheVMsAtWork() async throws {
        let driver = try ProcessSandboxDriver(image: try GuestImage.current(repositoryRoot: Self.root), logger: logger)
        let cpu = Mutex(1.0)
        let pool = VMPool(
            driver: driver, backend: .process, profiles: [PoolProfile(vm: .small, minIdle: 0, maxIdle: 0, maxTotal: 2)],
            sizer: PoolSizer(limits: PoolLimits(saturatedBusyLimit: 1)),
            host: {
                HostSample(cpuUtilization: cpu.withLock { $0 }, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
            },
            observer: Silent(), logger: logger)

        let first = try await pool.acquire(request("1"), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8).lease
        let second = Task { try await pool.acquire(request("2"), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8).lease }
        // The second waits (held for the saturated host), no VM is provisioned for it.
        let deadline = ContinuousClock.now + .seconds(60)
        while await pool.status().first?.heldForSaturatedHost != 1, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let held = await pool.status().first
        #expect(held?.heldForSaturatedHost == 1 && held?.busy == 1 && held?.provisioning == 0,
                "the second invocation did not wait: the host is saturated and a VM is at work (\(String(describing: held)))")

        await pool.release(first, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        let next = try await second.value
        #expect(next.vm.id == first.vm.id, "the waiting invocation should get the VM that came free")

        // Below saturation nothing waits: a second VM is provisioned beside the busy one.
        cpu.withLock { $0 = 0.5 }
        let third = try await pool.acquire(request("3"), policy: SaturationGateTests.FirstCandidate(), maxWaiting: 8).lease
        #expect(third.vm.id != next.vm.id)
        #expect(await pool.status().first?.busy == 2)

        await pool.release(next, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        await pool.release(third, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        await pool.shutdown()
    }
}
