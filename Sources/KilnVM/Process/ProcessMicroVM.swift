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
    private let cage: CgroupCage?
    private let configuration: ProcessSandboxDriver.Configuration
    private let logger: Logger
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
        self.cage = cage
        self.directory = directory
        self.configuration = configuration
        self.logger = logger
        self.onDestroy = onDestroy
    }

    public var hello: GuestFrame.Hello? {
        get async { await session.hello }
    }

    public func exec(_ request: GuestFrame.ExecRequest) async throws -> GuestFrame.ExecResult {
        try checkAlive()
        do {
            return try await session.exec(request, grace: configuration.execGrace)
        } catch {
            await failed(error)
            throw error
        }
    }

    public func reset(keepingServeRuntime: Bool) async throws {
        try checkAlive()
        do {
            try await session.reset(keepRuntime: keepingServeRuntime, timeout: configuration.request)
        } catch {
            await failed(error)
            throw error
        }
    }

    public func ping() async throws -> GuestFrame.Pong {
        try checkAlive()
        do {
            return try await session.ping(timeout: configuration.request)
        } catch {
            await failed(error)
            throw error
        }
    }

    public func stats() async throws -> VMStats {
        try checkAlive()
        guard let memory = ProcessFigures.memory(pid: process.pid) else {
            throw VMError.vmDied(vm: id, during: "stats", detail: process.exitStatus?.description ?? "no /proc entry")
        }
        return VMStats(pid: process.pid, rssKB: memory.rssKB, pssKB: memory.pssKB,
                       cpuTimeUs: ProcessFigures.cpuTimeUs(pid: process.pid) ?? 0)
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
        return try await session.rawRequest(bytes, timeout: configuration.request)
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

    private func failed(_ error: any Error) async {
        guard let error = error as? VMError else { return }
        switch error {
        case .timedOut, .vmDied, .protocolViolation:
            logger.warning("sandbox failed; killing it", metadata: ["vm": "\(id)", "error": "\(error)"])
            await process.kill(timeout: .seconds(5))
        default:
            break
        }
    }
}
