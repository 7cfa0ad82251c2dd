import Glibc

/// Starts method programs: in a process group of their own, signals reset to their defaults, the
/// three standard descriptors from pipes, and an environment of the agent's choosing.
enum ProgramSpawner {
    enum Outcome {
        case success(pid_t)
        case failure(Int32)
    }

    /// What every method program gets, plus `extra` (`NAME=value`).
    static func environment(scratch: String, extra: [String]) -> [String] {
        ["PATH=/kiln/bin:/bin:/sbin:/usr/bin:/usr/sbin", "HOME=\(scratch)", "TMPDIR=\(scratch)"] + extra
    }

    /// Starts `arguments[0]` (searched on PATH when it has no slash) with its own process group.
    static func spawn(arguments: [String], environment: [String], stdin: Int32, stdout: Int32, stderr: Int32) -> Outcome {
        guard let program = arguments.first else { return .failure(ENOENT) }
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
