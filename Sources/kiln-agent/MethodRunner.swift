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
        let spawned = spawn(program: program, arguments: request.entry, request: request,
                            stdin: stdinPipe.read, stdout: stdoutPipe.write, stderr: stderrPipe.write)
        stdinPipe.closeRead(); stdoutPipe.closeWrite(); stderrPipe.closeWrite()
        guard case .success(let pid) = spawned else {
            stdinPipe.closeBoth(); stdoutPipe.closeBoth(); stderrPipe.closeBoth()
            if case .failure(let code) = spawned {
                return failure(request, started: started, exitCode: 127,
                               stderr: "exec: cannot start \(program): \(describeErrno(code))")
            }
            return failure(request, started: started, exitCode: 127, stderr: "exec: cannot start \(program)")
        }
        spawnedGroups.append(pid)

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

        let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        var stderrText = io.stderrTail()
        let resultStatus: GuestFrame.ExecStatus
        switch outcome {
        case .timedOut:
            resultStatus = .timeout
            stderrText += (stderrText.isEmpty ? "" : "\n") + "kiln-agent: deadline of \(request.deadlineMs) ms expired; process group killed"
        case .outputTooLarge:
            resultStatus = .error
            stderrText += (stderrText.isEmpty ? "" : "\n") + "kiln-agent: stdout exceeded \(Self.maxOutputBytes) bytes; process group killed"
        case .finished, .exited:
            resultStatus = exitCode == 0 ? .ok : .error
        }
        return GuestFrame.ExecResult(
            id: request.id, status: resultStatus, output: resultStatus == .ok ? io.output : [],
            exitCode: exitCode, stderr: stderrText, execUs: finished - started,
            maxrssKB: UInt64(max(0, usage.ru_maxrss))
        )
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

    private enum SpawnOutcome {
        case success(pid_t)
        case failure(Int32)
    }

    private func spawn(
        program: String, arguments: [String], request: GuestFrame.ExecRequest,
        stdin: Int32, stdout: Int32, stderr: Int32
    ) -> SpawnOutcome {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let environment = [
            "PATH=/kiln/bin:/bin:/sbin:/usr/bin:/usr/sbin",
            "HOME=\(scratch)",
            "TMPDIR=\(scratch)",
            "KILN_METHOD=\(request.method)",
            "KILN_INVOCATION_ID=\(request.id)",
            "KILN_DEADLINE_MS=\(request.deadlineMs)",
        ]
        var argv = arguments.map { strdup($0) } + [nil]
        var envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let code = program.contains("/")
            ? posix_spawn(&pid, program, &actions, &attributes, &argv, &envp)
            : posix_spawnp(&pid, program, &actions, &attributes, &argv, &envp)
        return code == 0 ? .success(pid) : .failure(code)
    }
}

/// A pipe whose ends are closed exactly once.
struct Pipe {
    var read: Int32 = -1
    var write: Int32 = -1

    mutating func open() -> Bool {
        var ends: [Int32] = [-1, -1]
        // The agent is single-threaded: setting close-on-exec after pipe() cannot race a spawn.
        guard pipe(&ends) == 0 else { return false }
        _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
        read = ends[0]
        write = ends[1]
        return true
    }

    mutating func closeRead() {
        if read >= 0 { close(read) }
        read = -1
    }

    mutating func closeWrite() {
        if write >= 0 { close(write) }
        write = -1
    }

    mutating func closeBoth() {
        closeRead()
        closeWrite()
    }
}

/// Microseconds on the monotonic clock.
func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
}
