import Glibc
import KilnWire

/// Runs one method program: `entry` with the payload on its stdin, in its own process group,
/// under the request's deadline. Collects stdout (the method's MessagePack answer), the tail of
/// stderr, the exit status and the peak RSS from `wait4`.
struct MethodRunner {
    /// The largest stdout kept; a program writing more is killed and reported as an error.
    static let maxOutputBytes = 8 << 20
    /// How much of the end of stderr is returned.
    static let stderrTailBytes = 4096

    let scratch: String
    /// Process groups started since the last reset (each method runs in a group of its own).
    private var spawnedGroups: [pid_t] = []

    init(scratch: String) {
        self.scratch = scratch
    }

    mutating func run(_ request: GuestFrame.ExecRequest) -> GuestFrame.ExecResult {
        let started = monotonicMicroseconds()
        guard let program = request.entry.first, !program.isEmpty else {
            return failure(request, started: started, exitCode: 127, stderr: "exec: the entry is empty")
        }
        var stdinPipe = Pipe(), stdoutPipe = Pipe(), stderrPipe = Pipe()
        guard stdinPipe.open(), stdoutPipe.open(), stderrPipe.open() else {
            let message = "exec: pipe: \(describeErrno(errno))"
            stdinPipe.closeBoth(); stdoutPipe.closeBoth(); stderrPipe.closeBoth()
            return failure(request, started: started, exitCode: 127, stderr: message)
        }
        let spawned = ProgramSpawner.spawn(
            method: request.method, arguments: request.entry, environment: ProgramSpawner.environment(method: request.method, scratch: scratch, extra: [
                "KILN_METHOD=\(request.method)",
                "KILN_INVOCATION_ID=\(request.id)",
                "KILN_DEADLINE_MS=\(request.deadlineMs)",
            ]),
            stdin: stdinPipe.read, stdout: stdoutPipe.write, stderr: stderrPipe.write)
        stdinPipe.closeRead(); stdoutPipe.closeWrite(); stderrPipe.closeWrite()
        let pid: pid_t
        switch spawned {
        case .success(let started): pid = started
        case .failure(let reason):
            stdinPipe.closeBoth(); stdoutPipe.closeBoth(); stderrPipe.closeBoth()
            return failure(request, started: started, exitCode: 127, stderr: "exec: cannot start \(program): \(reason)")
        }
        spawnedGroups.append(pid)
        let oomKillsBefore = Housekeeping.oomKills()

        let deadline = started + request.deadlineMs * 1000
        var io = ChildIO(stdin: stdinPipe.write, stdout: stdoutPipe.read, stderr: stderrPipe.read,
                         payload: request.payload)
        let outcome = io.pump(child: pid, deadlineUs: deadline)
        // The method's process group does not outlive its exec (daemons in other sessions are
        // the reset's business).
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        var usage = rusage()
        if case .exited(let waited, let collected) = outcome {
            status = waited
            usage = collected
        } else {
            while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        }
        io.closeAll()
        let finished = monotonicMicroseconds()

        let exitCode = WaitStatus(raw: status).exitCode
        var stderrText = io.stderrTail()
        let resultStatus: GuestFrame.ExecStatus
        // Ended by a crash signal (not a deadline or too much output, where the agent killed it):
        // a crash, which taints the VM, not just a failure.
        var crashed = false
        var outOfMemory = false
        switch outcome {
        case .timedOut:
            resultStatus = .timeout
            stderrText += (stderrText.isEmpty ? "" : "\n") + "kiln-agent: deadline of \(request.deadlineMs) ms expired; process group killed"
        case .outputTooLarge:
            resultStatus = .error
            stderrText += (stderrText.isEmpty ? "" : "\n") + "kiln-agent: stdout exceeded \(Self.maxOutputBytes) bytes; process group killed"
        case .finished, .exited:
            resultStatus = exitCode == 0 ? .ok : .error
            crashed = WaitStatus(raw: status).isCrash
            // SIGKILL while the kernel's out-of-memory killer struck: the method needs more memory.
            if WaitStatus(raw: status).signal == SIGKILL, Housekeeping.oomKills() > oomKillsBefore {
                outOfMemory = true
                stderrText += (stderrText.isEmpty ? "" : "\n")
                    + "kiln-agent: the out-of-memory killer ended the method (\(Housekeeping.memoryTotalMB()) MiB in this VM)"
            }
        }
        return GuestFrame.ExecResult(
            id: request.id, status: resultStatus, output: resultStatus == .ok ? io.output : [],
            exitCode: exitCode, stderr: stderrText, execUs: finished - started,
            maxrssKB: UInt64(max(0, usage.ru_maxrss)),
            crashed: crashed, outOfMemory: outOfMemory, cpuUs: Self.microseconds(usage.ru_utime) &+ Self.microseconds(usage.ru_stime)
        )
    }

    private static func microseconds(_ time: timeval) -> UInt64 {
        UInt64(max(0, time.tv_sec)) &* 1_000_000 &+ UInt64(max(0, time.tv_usec))
    }

    /// Kills every process group this runner started (leftovers of earlier methods).
    mutating func killSpawnedGroups() {
        for group in spawnedGroups { kill(-group, SIGKILL) }
        spawnedGroups.removeAll()
    }

    private func failure(_ request: GuestFrame.ExecRequest, started: UInt64, exitCode: Int32, stderr: String)
        -> GuestFrame.ExecResult
    {
        GuestFrame.ExecResult(id: request.id, status: .error, output: [], exitCode: exitCode, stderr: stderr,
                              execUs: monotonicMicroseconds() - started, maxrssKB: 0)
    }
}

