import Foundation
import KilnPool
import KilnPredict
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
        func place(_ request: PlacementRequest, among candidates: [PlacementCandidate], host: HostSample) -> PlacementDecision? {
            guard let first = candidates.first else { return nil }
            let scored = ScoredCandidate(
                candidate: first, prediction: LatencyPrediction(provisionUs: 0, execUs: 0, uncertaintyUs: 0),
                effectiveLatencyUs: 0, resourceFactor: 1, suitability: 1)
            return PlacementDecision(winner: scored, candidates: [scored])
        }
    }

    struct Silent: PoolObserver {
        func vmCreated(id: String, backend: String, profile: VMProfile, provisioning: Provisioning, reason: String) {}
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
            driver: driver, backend: "process", profiles: [PoolProfile(vm: .small, minIdle: 0, maxIdle: 0, maxTotal: 2)],
            placement: FirstCandidate(), predictor: EWMAPredictor(), sizer: PoolSizer(limits: PoolLimits(saturatedBusyLimit: 1)),
            host: {
                HostSample(cpuUtilization: cpu.withLock { $0 }, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)
            },
            observer: Silent(), logger: logger)

        let first = try await pool.acquire(request("1"), maxWaiting: 8)
        let second = Task { try await pool.acquire(request("2"), maxWaiting: 8) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(await pool.status().first?.busy == 1, "the second invocation did not wait: the host is saturated and a VM is at work")

        await pool.release(first, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        let next = try await second.value
        #expect(next.vm.id == first.vm.id, "the waiting invocation should get the VM that came free")

        // Below saturation nothing waits: a second VM is provisioned beside the busy one.
        cpu.withLock { $0 = 0.5 }
        let third = try await pool.acquire(request("3"), maxWaiting: 8)
        #expect(third.vm.id != next.vm.id)
        #expect(await pool.status().first?.busy == 2)

        await pool.release(next, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        await pool.release(third, method: "echo", affinityKey: nil, outcome: .completed, lifecycle: LifecyclePolicy())
        await pool.shutdown()
    }
}
