import Foundation
import KilnPool
import KilnVM
import KilnWire
import Logging
import Synchronization
import Testing

/// Adaptive allocation on a real QEMU VM: a method held to a tight CPU quota runs slower than
/// predicted; the allocator notices, raises the quota, and the method is fast again.
@Suite("Adaptive allocation", .serialized)
struct AdaptiveAllocatorTests {
    final class Recorder: AllocationObserver {
        let changes = Mutex<[(from: ResourceLimits, to: ResourceLimits, reason: String)]>([])
        func vmReallocated(id: String, from: ResourceLimits, to: ResourceLimits, reason: String) {
            changes.withLock { $0.append((from, to, reason)) }
        }
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }

    /// sha256 of 256 KiB: a fixed amount of work (burn spins for a fixed *time*, so a smaller
    /// CPU share would not make it slower).
    func hashWork(_ vm: any MicroVM, entry: [String]) async throws -> GuestFrame.ExecResult {
        let data = [UInt8](repeating: 0x5a, count: 256 << 10)
        let payload = try MessagePackEncoder().encode(["args": ["data": .binary(data)], "context": nil] as MessagePackValue)
        let result = try await vm.exec(.init(id: UUID().uuidString, method: "sha256", entry: entry, payload: payload, deadlineMs: 20_000))
        #expect(result.status == .ok)
        return result
    }

    @Test(.timeLimit(.minutes(2)))
    func aVMRunningSlowerThanPredictedGetsMoreCPUAndGivesItBackWhenIdle() async throws {
        let image = try GuestImage.current(repositoryRoot: Self.root)
        let entry = try #require(image.manifest.guestEntry(for: "sha256"))
        let driver = try QEMUDriver(image: image, logger: logger)
        let vm = try await driver.provision(.small)
        defer { Task { await driver.shutdown() } }

        // What the work takes on a VM with a whole core: the prediction the allocator compares with.
        // The fastest of three, so that a busy moment on a shared host does not inflate it.
        var unconstrainedRuns: [UInt64] = []
        for _ in 0..<3 { unconstrainedRuns.append(try await hashWork(vm, entry: entry).execUs) }
        let unconstrained = unconstrainedRuns.min()!

        let recorder = Recorder()
        let allocator = AdaptiveAllocator(
            policy: AllocationPolicy(degradationRatio: 1.5, sustained: 2, cpuStep: 0.9, maximumCPUs: 1, relaxAfter: .milliseconds(300)),
            observer: recorder, logger: logger)
        let memory = VMProfile.small.memoryMB + QEMUDriver.qemuOverheadMB
        // A tenth of a core: slow enough to stand out even when parallel tests share the host.
        let tight = ResourceLimits(cpus: 0.1, memoryMB: memory)
        await allocator.register(vm, base: tight, driverDefault: ResourceLimits(cpus: 1, memoryMB: memory), memoryAdjustable: false)

        var slow: [UInt64] = []
        for _ in 0..<2 {
            let result = try await hashWork(vm, entry: entry)
            slow.append(result.execUs)
            await allocator.observe(vm: vm.id, predictedUs: Double(unconstrained), actualUs: Double(result.execUs), peakMemoryKB: result.maxrssKB)
        }
        #expect(slow.allSatisfy { Double($0) > 1.5 * Double(unconstrained) }, "a tenth of a core did not slow the work: \(slow) against \(unconstrained)")
        let changes = recorder.changes.withLock { $0 }
        try #require(changes.count == 1)
        #expect(changes[0].from.cpus == 0.1)
        #expect(changes[0].to.cpus == 1)
        #expect(changes[0].reason.contains("predicted for 2 invocations in a row"))

        let restored = min(try await hashWork(vm, entry: entry).execUs, try await hashWork(vm, entry: entry).execUs)
        #expect(Double(restored) < Double(slow.min()!) / 1.8, "after the raise the work took \(restored) µs, before \(slow)")

        // A clock past the quiet period the policy waits before it gives the raise back.
        await allocator.relax(now: .now + .milliseconds(400))
        #expect(await allocator.allocation(of: vm.id) == tight)
        #expect(recorder.changes.withLock { $0.count } == 2)
    }
}
