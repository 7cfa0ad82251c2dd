import Glibc
import KilnWire
import Logging

/// A QEMU microvm guest: its QEMU process, the agent session over the virtio-serial port, the
/// QMP monitor, and its folder in the run directory (console log, QEMU log).
public actor QEMUMicroVM: MicroVM {
    public nonisolated let id: String
    public nonisolated let backend: VMBackend
    public nonisolated let profile: VMProfile
    public nonisolated let provisioning: Provisioning
    /// The QEMU process.
    public nonisolated let process: ChildProcess
    /// The VM's folder (removed on destroy).
    public nonisolated let directory: String

    let session: AgentSession
    let monitor: QMPClient
    private let link: GuestLink
    private let logger: Logger
    private let cage: CgroupCage?
    private let onDestroy: @Sendable (String) async -> Void
    private let requestTimeout: Duration
    private var destroyed = false
    /// The latest ``resize(_:)``, which the next one waits for.
    private var resizing: Task<Void, any Error>?

    init(id: String, backend: VMBackend, profile: VMProfile, provisioning: Provisioning, launched: QEMULaunch,
         timeouts: QEMUDriver.Timeouts, logger: Logger, onDestroy: @escaping @Sendable (String) async -> Void) {
        self.id = id
        self.backend = backend
        self.profile = profile
        self.provisioning = provisioning
        self.process = launched.process
        self.directory = launched.directory
        self.session = launched.session
        self.monitor = launched.monitor
        self.cage = launched.cage
        self.link = GuestLink(vmID: id, session: launched.session, process: launched.process, execGrace: timeouts.execGrace,
                              requestTimeout: timeouts.request, logger: logger)
        self.logger = logger
        self.onDestroy = onDestroy
        self.requestTimeout = timeouts.request
        self.guestMemoryMB = profile.memoryMB
    }

    public var hello: GuestFrame.Hello? {
        get async { await session.hello }
    }

    public func exec(_ request: GuestFrame.ExecRequest) async throws -> GuestFrame.ExecResult {
        try checkAlive()
        return try await link.exec(request)
    }

    public func execBatch(
        _ requests: [GuestFrame.ExecRequest], each: @Sendable (Int, Result<GuestFrame.ExecResult, any Error>) async -> Void
    ) async {
        do {
            try checkAlive()
        } catch {
            if !requests.isEmpty { await each(0, .failure(error)) }
            return
        }
        await link.execBatch(requests, each: each)
    }

    public func reset(keepingServeRuntime: Bool) async throws {
        try checkAlive()
        try await link.reset(keepingServeRuntime: keepingServeRuntime)
    }

    public func ping() async throws -> GuestFrame.Pong {
        try checkAlive()
        return try await link.ping()
    }

    public nonisolated func hostCPUTimeUs() -> UInt64? {
        cage?.cpuTimeUs ?? link.cpuTimeUs
    }

    public func stats() async throws -> VMStats {
        try checkAlive()
        return try link.stats()
    }

    /// Changes the CPU bandwidth of the QEMU process's cgroup and, for a profile with a memory
    /// ceiling, the guest's memory: `limits.memoryMB` less QEMU's own overhead, between the
    /// profile's memory and its ceiling, set through the balloon (the cgroup's memory cap stays
    /// at the ceiling, so the host never kills QEMU for memory the balloon moves). Without a
    /// ceiling the guest keeps the RAM it booted with (microvm has no hotplug) and only the cap
    /// moves: one under the guest's RAM plus QEMU's needs is refused.
    ///
    /// A restored VM's memory only grows: its RAM maps the snapshot template's file, and QEMU
    /// (7.2) discards ballooned pages of a file by punching holes into it, which would change
    /// the template under every other clone. It goes back when the VM is destroyed.
    public func resize(_ limits: ResourceLimits) async throws {
        // One change at a time, in order: a balloon on its way is not redirected halfway.
        let previous = resizing
        let change = Task {
            _ = await previous?.result
            try await self.applyResize(limits)
        }
        resizing = change
        try await change.value
    }

    private func applyResize(_ limits: ResourceLimits) async throws {
        try checkAlive()
        guard let cage else {
            throw VMError.unsupported("VM \(id) runs without a cgroup (cgroups unavailable or disabled): nothing to resize")
        }
        let overhead = QEMUDriver.qemuOverheadMB
        guard let ceiling = profile.memoryCeilingMB else {
            guard limits.memoryMB >= profile.memoryMB + overhead else {
                throw VMError.unsupported(
                    "VM \(id) has \(profile.memoryMB) MiB of guest RAM; a cap under \(profile.memoryMB + overhead) MiB would kill it. Provision a smaller profile instead")
            }
            try cage.apply(limits)
            return
        }
        let guestMB = min(ceiling, max(profile.memoryMB, limits.memoryMB - overhead))
        if guestMB < guestMemoryMB && !canGiveMemoryBack {
            throw VMError.unsupported("VM \(id) was restored from a snapshot template: its memory cannot shrink (\(guestMemoryMB) MiB to \(guestMB) MiB)")
        }
        try cage.apply(ResourceLimits(cpus: limits.cpus, memoryMB: ceiling + overhead))
        guard guestMB != guestMemoryMB else { return }
        let before = guestMemoryMB
        do {
            try await monitor.setBalloon(guestMB: guestMB, vm: id, until: .now + requestTimeout)
        } catch {
            // Timed out, QEMU took the target and the guest is still on its way to it.
            if case VMError.timedOut = error { guestMemoryMB = guestMB }
            throw error
        }
        guestMemoryMB = guestMB
        logger.debug("balloon set", metadata: ["vm": "\(id)", "from_mb": "\(before)", "to_mb": "\(guestMB)"])
    }

    /// Whether a smaller memory can be given back to the host (see ``resize(_:)``).
    public nonisolated var canGiveMemoryBack: Bool { provisioning.method != .restore }

    /// The memory the guest may use now, MiB: the profile's, or more after a ``resize(_:)``.
    public private(set) var guestMemoryMB: Int

    /// Raw access to the agent, for tests of its error handling.
    public func rawRequest(_ bytes: [UInt8]) async throws -> GuestFrame {
        try checkAlive()
        return try await link.rawRequest(bytes)
    }

    /// True while QEMU runs.
    public var isRunning: Bool { !destroyed && process.isRunning }

    public func destroy() async {
        guard !destroyed else { return }
        destroyed = true
        await session.close()
        await monitor.close()
        await process.kill(timeout: .seconds(5))
        cage?.remove()
        removeTree(directory)
        ExitCleanup.shared.forget(path: directory)
        await onDestroy(id)
        logger.debug("vm destroyed", metadata: ["vm": "\(id)"])
    }

    private func checkAlive() throws(VMError) {
        if destroyed { throw .destroyed(vm: id) }
    }
}

/// A started QEMU with its channels, before the agent greeted.
struct QEMULaunch: Sendable {
    let process: ChildProcess
    let directory: String
    let session: AgentSession
    let monitor: QMPClient
    let cage: CgroupCage?
}
