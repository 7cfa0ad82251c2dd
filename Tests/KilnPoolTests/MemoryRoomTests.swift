import KilnPool
import KilnVM
import Logging
import Synchronization
import Testing

/// The allocator's memory decisions, on VMs that only take the limits they are given.
@Suite("Memory at run time")
struct MemoryRoomTests {
    final class Changes: AllocationObserver {
        let seen = Mutex<[(to: ResourceLimits, reason: String)]>([])
        func vmReallocated(id: String, from: ResourceLimits, to: ResourceLimits, reason: String) {
            seen.withLock { $0.append((to, reason)) }
        }
    }

    let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }

    func tracked(_ room: MemoryRoom?) async -> (AdaptiveAllocator, Changes, FakeVM) {
        let changes = Changes()
        let allocator = AdaptiveAllocator(policy: AllocationPolicy(memoryStep: 1.5, relaxAfter: .seconds(30)), observer: changes, logger: logger)
        let vm = FakeVM(id: "vm", profile: VMProfile(name: "small", memoryMB: 128, memoryCeilingMB: 384)) {}
        let base = ResourceLimits(cpus: 1, memoryMB: 128 + (room?.overheadMB ?? 0))
        await allocator.register(vm, base: base, driverDefault: base, memory: room)
        return (allocator, changes, vm)
    }

    @Test func anOutOfMemoryEndGivesAllTheRoomAtOnceAndNoCPU() async {
        let (allocator, changes, vm) = await tracked(MemoryRoom(overheadMB: 256, ceilingMB: 384 + 256, canShrink: false))
        // A run ended by the OOM killer failed: the next gets the ceiling; its time says nothing of the CPU.
        for _ in 0..<3 {
            await allocator.observe(vm: vm.id, predictedUs: 1_000, actualUs: 100_000, peakMemoryKB: 60 << 10, outOfMemory: true)
        }
        #expect(await allocator.allocation(of: vm.id) == ResourceLimits(cpus: 1, memoryMB: 384 + 256))
        #expect(changes.seen.withLock { $0.map(\.reason) } == ["the guest ran out of memory at 128 MiB"])

        // Idle: a VM whose memory cannot shrink keeps it, and is named for the pool to replace.
        #expect(await allocator.relax(only: [vm.id], now: .now + .seconds(60)) == [vm.id])
        #expect(await allocator.allocation(of: vm.id)?.memoryMB == 384 + 256)
        #expect(changes.seen.withLock { $0.count } == 1)
    }

    @Test func aPeakNearTheUsableMemoryGrowsItAndRelaxingGivesItBack() async {
        let (allocator, _, vm) = await tracked(MemoryRoom(overheadMB: 256, ceilingMB: 384 + 256))
        // 110 of 128 usable MiB (the overhead is QEMU's, not the method's).
        await allocator.observe(vm: vm.id, predictedUs: 1_000, actualUs: 1_000, peakMemoryKB: 110 << 10)
        #expect(await allocator.allocation(of: vm.id)?.memoryMB == 192 + 256)
        #expect(await allocator.relax(only: [vm.id], now: .now + .seconds(60)).isEmpty)
        #expect(await allocator.allocation(of: vm.id)?.memoryMB == 128 + 256)
    }

    @Test func aVMLentOutIsNotRelaxedHoweverLongItsCall() async {
        let (allocator, _, vm) = await tracked(MemoryRoom(overheadMB: 256, ceilingMB: 384 + 256))
        await allocator.observe(vm: vm.id, predictedUs: 1_000, actualUs: 1_000, peakMemoryKB: 60 << 10, outOfMemory: true)
        await allocator.relax(only: ["another-vm"], now: .now + .seconds(600))
        #expect(await allocator.allocation(of: vm.id)?.memoryMB == 384 + 256)
    }

    @Test func aVMWithoutRoomNeverGetsMoreMemory() async {
        let (allocator, changes, vm) = await tracked(nil)
        await allocator.observe(vm: vm.id, predictedUs: 1_000, actualUs: 1_000, peakMemoryKB: 127 << 10, outOfMemory: true)
        #expect(await allocator.allocation(of: vm.id)?.memoryMB == 128)
        #expect(changes.seen.withLock { $0.isEmpty })
    }
}
