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
        await allocator.register(vm, base: tight, driverDefault: ResourceLimits(cpus: 1, memoryMB: memory), memory: nil)

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
        await allocator.relax(only: [vm.id], now: .now + .milliseconds(400))
        #expect(await allocator.allocation(of: vm.id) == tight)
        #expect(recorder.changes.withLock { $0.count } == 2)
    }

    /// A profile may give its VMs more vCPUs than its base CPU share (`cpu_share`): here two
    /// vCPUs held to one core. A method on two threads then gets one core's worth of the host;
    /// once the allocator raises the quota to two cores, the same method gets close to two.
    @Test(.timeLimit(.minutes(3)))
    func twoVCPUsHeldToOneCoreRunTwoThreadsInParallelOnceTheQuotaRises() async throws {
        let image = try GuestImage.current(repositoryRoot: Self.root)
        let entry = try #require(image.manifest.guestEntry(for: "burn"))
        let driver = try QEMUDriver(image: image, logger: logger)
        let vm = try await driver.provision(VMProfile(name: "duo", vcpus: 2, memoryMB: 128))
        defer { Task { await driver.shutdown() } }
        #expect(await vm.hello?.vcpus == 2, "the guest does not see two vCPUs")

        let recorder = Recorder()
        let allocator = AdaptiveAllocator(
            policy: AllocationPolicy(degradationRatio: 1.5, sustained: 1, cpuStep: 1, maximumCPUs: 2), observer: recorder, logger: logger)
        let memory = 128 + QEMUDriver.qemuOverheadMB
        await allocator.register(vm, base: ResourceLimits(cpus: 1, memoryMB: memory),
                                 driverDefault: ResourceLimits(cpus: 2, memoryMB: memory), memory: nil)

        /// Burns two threads for 800 ms; returns the result and the host CPU the VM used per
        /// second of the call (about 1 on one core, about 2 on two).
        func burnTwoThreads() async throws -> (GuestFrame.ExecResult, cores: Double) {
            let payload = try MessagePackEncoder().encode(["args": ["ms": 800, "threads": 2], "context": nil] as MessagePackValue)
            let started = ContinuousClock.now
            let cpuBefore = try #require(vm.hostCPUTimeUs())
            let result = try await vm.exec(.init(id: UUID().uuidString, method: "burn", entry: entry, payload: payload, deadlineMs: 20_000))
            let cpu = try #require(vm.hostCPUTimeUs()) - cpuBefore
            #expect(result.status == .ok, "\(result.stderr)")
            return (result, Double(cpu) / Double((ContinuousClock.now - started).inMicroseconds))
        }
        let (held, heldCores) = try await burnTwoThreads()
        #expect(heldCores < 1.2, "held to one core, the VM used \(heldCores) cores")

        // Slower than predicted: the allocator gives the VM its second core.
        await allocator.observe(vm: vm.id, predictedUs: Double(held.execUs) / 2, actualUs: Double(held.execUs), peakMemoryKB: held.maxrssKB)
        #expect(await allocator.allocation(of: vm.id)?.cpus == 2)
        let (_, raisedCores) = try await burnTwoThreads()
        #expect(raisedCores > 1.4, "raised to two cores, the VM used \(raisedCores) cores (held: \(heldCores))")
        print("two threads on two vCPUs: \(heldCores) cores held to one, \(raisedCores) raised to two")
    }

    /// Memory at run time for QEMU guests: a profile of 128 MiB with a ceiling of 384 MiB boots
    /// (and saves its template) with 384 MiB, a balloon holding all but 128. A method that needs
    /// 200 MiB runs out of memory; the allocator lets the balloon go, the next run succeeds, and
    /// the RSS of the VM's QEMU follows. A booted VM gives the memory back when it relaxes; a
    /// restored one keeps it (its RAM maps the template's file, see `QEMUMicroVM.resize`).
    @Test(.timeLimit(.minutes(4)))
    func aMethodOutOfMemoryGetsMoreFromTheBalloonAndTheNextRunSucceeds() async throws {
        let image = try GuestImage.current(repositoryRoot: Self.root)
        let entry = try #require(image.manifest.guestEntry(for: "allocate"))
        let driver = try QEMUDriver(image: image, logger: logger)
        defer { Task { await driver.shutdown() } }
        let profile = VMProfile(name: "grows", vcpus: 1, memoryMB: 128, memoryCeilingMB: 384)
        let overhead = QEMUDriver.qemuOverheadMB
        let (base, ceiling) = (ResourceLimits(cpus: 1, memoryMB: 128 + overhead), ResourceLimits(cpus: 1, memoryMB: 384 + overhead))

        func allocate(_ vm: QEMUMicroVM) async throws -> GuestFrame.ExecResult {
            let payload = try MessagePackEncoder().encode(["args": ["mb": 200], "context": nil] as MessagePackValue)
            let result = try await vm.exec(.init(id: UUID().uuidString, method: "allocate", entry: entry, payload: payload, deadlineMs: 30_000))
            try await vm.reset()
            return result
        }
        func residentMB(_ vm: QEMUMicroVM) async throws -> Int { Int(try await vm.stats().rssKB / 1_024) }

        for vm in [try await driver.restore(profile), try await driver.boot(profile)] {
            let how = vm.provisioning.method.rawValue
            let allocator = AdaptiveAllocator(
                policy: AllocationPolicy(relaxAfter: .seconds(1)), observer: Recorder(), logger: logger)
            await allocator.register(vm, base: base, driverDefault: ceiling,
                                     memory: MemoryRoom(overheadMB: overhead, ceilingMB: ceiling.memoryMB, canShrink: vm.canGiveMemoryBack))
            let before = try await residentMB(vm)
            let starved = try await allocate(vm)
            #expect(starved.status == .error && starved.outOfMemory, "\(how): 200 MiB fit in 128: \(starved.status) \(starved.stderr)")
            await allocator.observe(vm: vm.id, predictedUs: 1, actualUs: 1, peakMemoryKB: starved.maxrssKB, outOfMemory: true)
            #expect(await allocator.allocation(of: vm.id) == ceiling)
            #expect(await vm.guestMemoryMB == 384)

            let fed = try await allocate(vm)
            #expect(fed.status == .ok, "\(how): 200 MiB did not fit in 384: \(fed)")
            let grown = try await residentMB(vm)
            #expect(grown >= before + 150, "\(how): QEMU's RSS went from \(before) to \(grown) MiB")

            await allocator.relax(only: [vm.id], now: .now + .seconds(2))
            if vm.canGiveMemoryBack {
                #expect(await allocator.allocation(of: vm.id) == base)
                #expect(await vm.guestMemoryMB == 128)
                let shrunk = try await residentMB(vm)
                #expect(shrunk <= grown - 100, "\(how): QEMU's RSS went from \(grown) to \(shrunk) MiB after the balloon took the memory back")
                let starvedAgain = try await allocate(vm)
                #expect(starvedAgain.outOfMemory, "\(how): back at 128 MiB, 200 MiB fit")
            } else {
                #expect(await allocator.allocation(of: vm.id) == ceiling, "\(how): a restored VM's memory shrank")
            }
            print("\(how): RSS \(before) MiB at 128 MiB, \(grown) MiB after 200 MiB at 384 MiB")
            await vm.destroy()
        }
    }
}
