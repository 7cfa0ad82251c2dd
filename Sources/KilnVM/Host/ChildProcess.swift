import CKilnHost
import Glibc
import Synchronization

/// How a child process ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32)

    init(waitStatus status: Int32) {
        self = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exited with code \(code)"
        case .signalled(let signal): return "killed by signal \(signal)"
        }
    }
}

/// A child started by ``ProcessLauncher``: waited for through a pidfd on the ``IOReactor``,
/// killed by PID, reaped exactly once.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    /// What was started, for messages.
    public let executable: String

    private struct State {
        var pidfd: Int32
        var status: ExitStatus?
    }

    private let state: Mutex<State>

    init(pid: pid_t, executable: String) {
        self.pid = pid
        self.executable = executable
        let pidfd = kiln_pidfd_open(pid)
        self.state = Mutex(State(pidfd: pidfd >= 0 ? pidfd : -1, status: nil))
        ExitCleanup.shared.track(pid: pid)
    }

    deinit {
        state.withLock { state in
            if state.status == nil {
                Glibc.kill(pid, SIGKILL)
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                ExitCleanup.shared.untrack(pid: pid)
            }
            if state.pidfd >= 0 { close(state.pidfd) }
        }
    }

    /// The exit status when the child has ended (it is reaped then), else nil.
    public var exitStatus: ExitStatus? {
        state.withLock { state in reap(&state, blocking: false) }
    }

    /// True until the child has ended.
    public var isRunning: Bool { exitStatus == nil }

    /// Waits until the child ends, or throws ``IOReactor/WaitError/timedOut`` at `deadline`.
    @discardableResult
    public func waitForExit(until deadline: ContinuousClock.Instant?) async throws(IOReactor.WaitError) -> ExitStatus {
        while true {
            if let status = exitStatus { return status }
            let pidfd = state.withLock { $0.pidfd }
            if pidfd < 0 {
                // No pidfd (old kernel): poll.
                if let deadline, ContinuousClock.now >= deadline { throw .timedOut }
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            try await IOReactor.shared.wait(for: pidfd, .readable, until: deadline)
        }
    }

    /// Sends `signal` to the child (nothing when it has been reaped already: the PID may be reused).
    public func signal(_ signal: Int32) {
        state.withLock { state in
            if state.status == nil { Glibc.kill(pid, signal) }
        }
    }

    /// Kills the child with SIGKILL and waits until it is reaped (bounded by `timeout`).
    @discardableResult
    public func kill(timeout: Duration = .seconds(5)) async -> ExitStatus? {
        signal(SIGKILL)
        return try? await waitForExit(until: .now + timeout)
    }

    private func reap(_ state: inout State, blocking: Bool) -> ExitStatus? {
        if let status = state.status { return status }
        var raw: Int32 = 0
        let reaped = waitpid(pid, &raw, blocking ? 0 : WNOHANG)
        guard reaped == pid else { return nil }
        let status = ExitStatus(waitStatus: raw)
        state.status = status
        ExitCleanup.shared.untrack(pid: pid)
        return status
    }
}
