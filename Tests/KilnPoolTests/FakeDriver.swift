import KilnVM
import KilnWire
import Synchronization

/// A `MicroVMDriver` whose VMs are values in memory: the pool's logic driven without any VM
/// (as NIO tests a handler with `EmbeddedChannel`). It counts what it made and destroyed.
final class FakeDriver: MicroVMDriver {
    private let counts = Mutex((made: 0, destroyed: 0))
    /// Whether its VMs' resets fail, as a guest that cannot clear what a method left does.
    let failingResets: Bool

    init(failingResets: Bool = false) {
        self.failingResets = failingResets
    }

    var backend: VMBackend { .process }

    /// VMs made, and VMs destroyed, so far.
    var made: Int { counts.withLock { $0.made } }
    var destroyed: Int { counts.withLock { $0.destroyed } }

    func provision(_ profile: VMProfile) async throws -> any MicroVM {
        let number = counts.withLock { counts -> Int in
            counts.made += 1
            return counts.made
        }
        return FakeVM(id: "fake-\(number)", profile: profile, failingResets: failingResets) {
            self.counts.withLock { $0.destroyed += 1 }
        }
    }

    func shutdown() async {}
}

/// A VM that answers every request at once and does nothing.
actor FakeVM: MicroVM {
    nonisolated let id: String
    private let failingResets: Bool
    nonisolated let backend = VMBackend.process
    nonisolated let profile: VMProfile
    nonisolated let provisioning = Provisioning(method: .spawn, duration: .milliseconds(1))
    private let onDestroy: @Sendable () -> Void
    private var destroyed = false

    init(id: String, profile: VMProfile, failingResets: Bool = false, onDestroy: @escaping @Sendable () -> Void) {
        self.id = id
        self.failingResets = failingResets
        self.profile = profile
        self.onDestroy = onDestroy
    }

    var hello: GuestFrame.Hello? {
        get async { GuestFrame.Hello(agentVersion: "fake", uptimeUs: 0, vcpus: UInt32(profile.vcpus), memoryMB: UInt32(profile.memoryMB)) }
    }

    func exec(_ request: GuestFrame.ExecRequest) async throws -> GuestFrame.ExecResult {
        throw VMError.unsupported("a fake VM runs nothing")
    }

    func execBatch(
        _ requests: [GuestFrame.ExecRequest], each: @Sendable (Int, Result<GuestFrame.ExecResult, any Error>) async -> Void
    ) async {
        await execOneByOne(requests, each: each)
    }

    func reset(keepingServeRuntime: Bool) async throws {
        if destroyed { throw VMError.destroyed(vm: id) }
        if failingResets { throw VMError.protocolViolation(vm: id, detail: "reset failed: processes left") }
    }

    func ping() async throws -> GuestFrame.Pong {
        GuestFrame.Pong(uptimeUs: 0, load1: 0, memAvailableKB: 0)
    }

    nonisolated func hostCPUTimeUs() -> UInt64? { nil }

    func stats() async throws -> VMStats {
        VMStats(pid: 0, rssKB: 0, pssKB: 0, cpuTimeUs: 0)
    }

    func resize(_ limits: ResourceLimits) async throws {}

    func destroy() async {
        guard !destroyed else { return }
        destroyed = true
        onDestroy()
    }
}
