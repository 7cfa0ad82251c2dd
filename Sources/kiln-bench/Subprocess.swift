#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Starts `executable` with its standard output (and, with `mergeErrors`, its standard error) in
/// the file at `outputPath`, and `environment` as its whole environment; returns its PID.
func spawn(
    _ executable: String, _ arguments: [String], outputPath: String, mergeErrors: Bool = false,
    environment: [String: String] = ProcessInfo.processInfo.environment
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    if mergeErrors { posix_spawn_file_actions_adddup2(&actions, 1, 2) }
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    let variables: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        argv.forEach { free($0) }
        variables.forEach { free($0) }
    }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, variables)
    guard spawned == 0 else { throw BenchmarkError("cannot run \(executable): \(String(cString: strerror(spawned)))") }
    return pid
}

/// Runs a program to completion and returns its exit status and standard output; its standard
/// error goes to ours.
func runToCompletion(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-bench-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    let pid = try spawn(executable, arguments, outputPath: outputPath)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
}

/// Sends SIGTERM to `pid` (a child of ours) and waits for it, with SIGKILL after `timeout`.
func terminate(_ pid: pid_t, timeout: Duration) {
    kill(pid, SIGTERM)
    let deadline = ContinuousClock.now + timeout
    var status: Int32 = 0
    while waitpid(pid, &status, WNOHANG) != pid {
        if ContinuousClock.now > deadline {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
            return
        }
        usleep(20_000)
    }
}

/// A benchmark could not run; the message says what to do.
struct BenchmarkError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
