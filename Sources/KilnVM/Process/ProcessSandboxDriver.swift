import Glibc
import KilnWire
import Logging

/// The `process` backend: kiln-agent from the guest image's root file system, started as PID 1 of
/// fresh PID, mount, network, IPC and UTS namespaces, chrooted into the image, inside a cgroup
/// with CPU and memory limits. No hardware isolation: a kernel bug is a way out. For hosts
/// without virtualization and for fast tests. Needs root.
public actor ProcessSandboxDriver: MicroVMDriver {
    public struct Configuration: Sendable {
        /// Agent start to hello.
        public var start: Duration = .seconds(10)
        /// ping and reset.
        public var request: Duration = .seconds(10)
        /// Added to an exec's deadline before the host gives up on the sandbox.
        public var execGrace: Duration = .seconds(5)
        /// Refuse to start without cgroup limits (true), or run unlimited with a warning.
        public var requireCgroups = true
        public var runBase = RunDirectory.defaultBase

        public init() {}
    }

    public nonisolated let image: GuestImage
    public nonisolated let configuration: Configuration
    private let logger: Logger
    private let run: RunDirectory
    private let cgroups: CgroupLayout?
    private var live: [String: ProcessMicroVM] = [:]
    private var counter = 0
    /// The image's root file systems on the host, mounted at the first start (one task, which
    /// starts that overlap wait for).
    private var rootFilesystems: Task<HostRootFilesystems, any Error>?

    /// - Throws: ``VMError/sandboxUnavailable(_:)`` when not root, or without cgroups when they
    ///   are required.
    public init(image: GuestImage, configuration: Configuration = Configuration(), logger: Logger) throws(VMError) {
        guard getuid() == 0 else {
            throw .sandboxUnavailable("namespaces, chroot and cgroups need root; run the worker as root or use the qemu backend")
        }
        guard access(image.agentPath, X_OK) == 0 else {
            throw .imageMissing(path: image.rootFilesystem, hint: "the image has no \(GuestLayout.agent); rebuild it with `make image`")
        }
        let layout = CgroupLayout.current()
        if layout == nil && configuration.requireCgroups {
            throw .sandboxUnavailable("no cgroup hierarchy with cpu and memory controllers is mounted")
        }
        if let layout { CgroupCage.sweep(layout: layout) }
        self.image = image
        self.configuration = configuration
        self.logger = logger
        self.cgroups = layout
        self.run = try RunDirectory(base: configuration.runBase)
    }

    public var backend: VMBackend {
        get async { .process }
    }

    public func provision(_ profile: VMProfile) async throws -> any MicroVM {
        try await start(profile)
    }

    /// Starts a sandbox and waits for its agent's hello.
    public func start(_ profile: VMProfile) async throws(VMError) -> ProcessMicroVM {
        let (image, runFolder, logger) = (image, run.path, logger)
        let mounting = rootFilesystems ?? Task { try await HostRootFilesystems.mount(image, runFolder: runFolder, logger: logger) }
        rootFilesystems = mounting
        let mounts: HostRootFilesystems
        do {
            mounts = try await mounting.value
        } catch {
            rootFilesystems = nil
            throw error as? VMError ?? .hostFailure("\(error)")
        }
        counter += 1
        let id = "p\(counter)-\(String(UInt16.random(in: 0...UInt16.max), radix: 16))"
        let started = ContinuousClock.now
        let directory = try run.makeVMDirectory(id: id)
        let log = directory + "/agent.log"

        var cage: CgroupCage?
        if let cgroups {
            do {
                cage = try CgroupCage(layout: cgroups, name: "\(getpid())-\(id)",
                                      limits: ResourceLimits(cpus: Double(profile.vcpus), memoryMB: profile.memoryMB))
            } catch {
                removeTree(directory)
                if configuration.requireCgroups { throw error }
                logger.warning("sandbox runs without cgroup limits", metadata: ["vm": "\(id)", "reason": "\(error)"])
            }
        }
        let (hostEnd, guestEnd) = try UnixSocket.pair()
        let logFD = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer {
            close(guestEnd)
            if logFD >= 0 { close(logFD) }
        }
        let arguments = [
            GuestLayout.agent, "--fd", "3", "--sandbox", image.rootFilesystem, "--hostname", "kiln-\(id)",
            "--scratch", GuestLayout.scratch, "--vcpus", "\(profile.vcpus)", "--memory-mb", "\(profile.memoryMB)",
        ] + mounts.agentArguments
        let process: ChildProcess
        do {
            process = try await ProcessLauncher.shared.spawn(SpawnSpec(
                executable: image.agentPath, arguments: arguments,
                environment: ["PATH": "/kiln/bin:/bin:/usr/bin", "HOME": "/tmp"],
                descriptors: [nil, logFD, logFD, guestEnd], namespaces: .sandbox,
                cgroupProcsFiles: cage?.procsFiles ?? []))
        } catch {
            close(hostEnd)
            cage?.remove()
            removeTree(directory)
            throw .spawnFailed("\(error)")
        }
        let session = AgentSession(vmID: id, channel: GuestChannel(fd: hostEnd), logger: logger) {
            guard let status = process.exitStatus else { return nil }
            let tail = readFile(log).map { String(decoding: $0.suffix(400), as: UTF8.self) } ?? ""
            return "agent \(status); log: \(tail)"
        }
        do {
            try await session.awaitHello(within: configuration.start, step: "start")
        } catch {
            await session.close()
            await process.kill()
            cage?.remove()
            removeTree(directory)
            throw error
        }
        let vm = ProcessMicroVM(
            id: id, profile: profile, provisioning: Provisioning(method: .spawn, duration: started.duration(to: .now)),
            process: process, session: session, cage: cage, directory: directory, configuration: configuration,
            logger: logger) { [weak self] id in await self?.forget(id) }
        live[id] = vm
        ExitCleanup.shared.removeAtExit(path: directory)
        return vm
    }

    public func shutdown() async {
        let vms = Array(live.values)
        for vm in vms { await vm.destroy() }
        live.removeAll()
        if let mounting = rootFilesystems { (try? await mounting.value)?.unmount() }
        rootFilesystems = nil
    }

    /// The number of sandboxes alive.
    public var liveCount: Int { live.count }

    private func forget(_ id: String) { live[id] = nil }
}
