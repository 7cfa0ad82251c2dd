import KilnWire
import Logging

/// What both backends do alike with a running guest: the agent's requests over its session,
/// each bounded by the backend's timeouts, and a guest that timed out, died or broke the
/// protocol killed by PID at once, so that it cannot burn a core; plus the host process's
/// figures. The VM types add only what differs (their lifetime, their cgroup, QMP).
struct GuestLink: Sendable {
    let vmID: String
    let session: AgentSession
    /// The guest's process as the host sees it (QEMU, or the sandbox's agent).
    let process: ChildProcess
    /// How long past a call's deadline the host waits for the agent's answer.
    let execGrace: Duration
    /// The bound of the agent's other requests (reset, ping).
    let requestTimeout: Duration
    let logger: Logger

    func exec(_ request: GuestFrame.ExecRequest) async throws -> GuestFrame.ExecResult {
        try await killingOnFailure { () async throws(VMError) in try await session.exec(request, grace: execGrace) }
    }

    func execBatch(
        _ requests: [GuestFrame.ExecRequest], each: @Sendable (Int, Result<GuestFrame.ExecResult, any Error>) async -> Void
    ) async {
        guard await session.hello?.takesBatches == true else {
            // An agent older than batches: its calls one by one.
            await execOneAfterAnother(requests, exec: exec, each: each)
            return
        }
        let failure = await session.execBatch(requests, grace: execGrace) { index, outcome in
            await each(index, outcome.mapError { $0 })
        }
        if let failure {
            // Whatever the failure, the calls after it go elsewhere: the guest must not run them too.
            logger.warning("guest failed during a batch; killing it", metadata: ["vm": "\(vmID)", "error": "\(failure)"])
            await process.kill(timeout: .seconds(5))
        }
    }

    func reset(keepingServeRuntime: Bool) async throws {
        try await killingOnFailure { () async throws(VMError) in try await session.reset(keepRuntime: keepingServeRuntime, timeout: requestTimeout) }
    }

    func ping() async throws -> GuestFrame.Pong {
        try await killingOnFailure { () async throws(VMError) in try await session.ping(timeout: requestTimeout) }
    }

    /// Raw bytes to the agent, for tests of its error handling (a failure here is expected, and
    /// does not kill the guest).
    func rawRequest(_ bytes: [UInt8]) async throws -> GuestFrame {
        try await session.rawRequest(bytes, timeout: requestTimeout)
    }

    /// The host process's CPU time with its reaped children's (the sandbox's methods), µs; nil
    /// once it is gone.
    var cpuTimeUs: UInt64? { ProcessFigures.cpuTimeUs(pid: process.pid, reapedChildren: true) }

    /// The host process's memory and CPU time.
    func stats() throws -> VMStats {
        guard let memory = ProcessFigures.memory(pid: process.pid) else {
            throw VMError.vmDied(vm: vmID, during: "stats", detail: process.exitStatus?.description ?? "no /proc entry")
        }
        return VMStats(pid: process.pid, rssKB: memory.rssKB, pssKB: memory.pssKB,
                       cpuTimeUs: ProcessFigures.cpuTimeUs(pid: process.pid) ?? 0)
    }

    private func killingOnFailure<T>(_ body: () async throws(VMError) -> T) async throws(VMError) -> T {
        do {
            return try await body()
        } catch {
            switch error {
            case .timedOut, .vmDied, .protocolViolation:
                logger.warning("guest failed; killing it", metadata: ["vm": "\(vmID)", "error": "\(error)"])
                await process.kill(timeout: .seconds(5))
            default:
                break
            }
            throw error
        }
    }
}
