import Foundation

/// A program running beside a test: started with `posix_spawn`, its stdout (and stderr, unless
/// given a file of its own) into a file, ended by ``stop(timeout:)`` — SIGTERM, then SIGKILL
/// when it has not exited within the timeout — or when it is released.
public final class SpawnedProcess: @unchecked Sendable {
    /// The process id; 0 once it has been waited for.
    public private(set) var pid: pid_t = 0

    public init(_ arguments: [String], environment: [String: String], output: String, errors: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if let errors {
            posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let variables: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            variables.forEach { free($0) }
        }
        let status = posix_spawn(&pid, arguments[0], &actions, nil, argv, variables)
        guard status == 0 else { throw HelperFailure("cannot start \(arguments[0]): \(String(cString: strerror(status)))") }
    }

    /// The raw wait status when the process has exited (it is then reaped), else nil.
    public func exited() -> Int32? {
        guard pid > 0 else { return nil }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        pid = 0
        return status
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `timeout`); returns the raw wait status,
    /// or -1 when it was not running.
    @discardableResult
    public func stop(timeout: Duration = .seconds(60)) -> Int32 {
        guard pid > 0 else { return -1 }
        Glibc.kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) != pid {
            if ContinuousClock.now > deadline {
                Glibc.kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                break
            }
            usleep(20_000)
        }
        pid = 0
        return status
    }

    /// SIGKILL, as a crash or an out-of-memory kill ends a program, and reaps it; returns the raw
    /// wait status, or -1 when it was not running.
    @discardableResult
    public func kill() -> Int32 {
        guard pid > 0 else { return -1 }
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
        return status
    }

    deinit { stop(timeout: .seconds(10)) }
}
