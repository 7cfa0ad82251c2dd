import Glibc
import KilnWire
import Logging

/// A `process` sandbox: kiln-agent as PID 1 of its own namespaces (killing it ends every process
/// in them), in its own cgroup.
public actor ProcessMicroVM: MicroVM {
    public nonisolated let id: String
    public nonisolated let backend = VMBackend.process
    public nonisolated let profile: VMProfile
    public nonisolated let provisioning: Provisioning
    /// The agent, as the host sees it.
    public nonisolated let process: ChildProcess
    public nonisolated let directory: String

    private let session: AgentSession
    private let link: GuestLink
    private let cage: CgroupCage?
    private let onDestroy: @Sendable (String) async -> Void
    private var destroyed = false

    init(id: String, profile: VMProfile, provisioning: Provisioning, process: ChildProcess, session: AgentSession,
         cage: CgroupCage?, directory: String, configuration: ProcessSandboxDriver.Configuration, logger: Logger,
         onDestroy: @escaping @Sendable (String) async -> Void) {
        self.id = id
        self.profile = profile
        self.provisioning = provisioning
        self.process = process
        self.session = session
        self.link = GuestLink(vmID: id, session: session, process: process, execGrace: configuration.execGrace,
                              requestTimeout: configuration.request, logger: logger)
        self.cage = cage
        self.directory = directory
        self.onDestroy = onDestroy
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

    /// Changes the sandbox's cgroup limits, live.
    public func resize(_ limits: ResourceLimits) async throws {
        try checkAlive()
        guard let cage else { throw VMError.unsupported("sandbox \(id) runs without a cgroup: nothing to resize") }
        try cage.apply(limits)
    }

    /// Raw access to the agent, for tests of its error handling.
    public func rawRequest(_ bytes: [UInt8]) async throws -> GuestFrame {
        try checkAlive()
        return try await link.rawRequest(bytes)
    }

    public func destroy() async {
        guard !destroyed else { return }
        destroyed = true
        await session.close()
        await process.kill(timeout: .seconds(5))
        cage?.remove()
        removeTree(directory)
        ExitCleanup.shared.forget(path: directory)
        await onDestroy(id)
    }

    private func checkAlive() throws(VMError) {
        if destroyed { throw .destroyed(vm: id) }
    }
}
