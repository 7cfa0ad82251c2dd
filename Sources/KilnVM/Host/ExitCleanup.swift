import Glibc
import Synchronization

/// What must not outlive this process: child PIDs to kill and paths to remove when it exits
/// normally. (A process killed outright still takes its children along — they carry
/// PR_SET_PDEATHSIG — and the next ``RunDirectory`` sweeps the files it left.)
public final class ExitCleanup: Sendable {
    /// The process-wide registry; its `atexit` hook is installed on first use.
    public static let shared = ExitCleanup()

    private struct State {
        var pids: Set<pid_t> = []
        var paths: [String] = []
        var actions: [@Sendable () -> Void] = []
    }

    private let state = Mutex(State())

    private init() {
        atexit { ExitCleanup.shared.runNow() }
    }

    func track(pid: pid_t) { state.withLock { _ = $0.pids.insert(pid) } }
    func untrack(pid: pid_t) { state.withLock { _ = $0.pids.remove(pid) } }

    /// Removes `path` (recursively) at exit unless ``forget(path:)`` is called first.
    public func removeAtExit(path: String) { state.withLock { $0.paths.append(path) } }
    public func forget(path: String) { state.withLock { $0.paths.removeAll { $0 == path } } }

    /// Runs `action` at exit, after the children are killed (e.g. removing a cgroup).
    public func atExit(_ action: @escaping @Sendable () -> Void) { state.withLock { $0.actions.append(action) } }

    /// Kills every tracked child, reaps it, then removes the tracked paths.
    public func runNow() {
        let (pids, paths, actions) = state.withLock { state in
            defer { state = State() }
            return (state.pids, state.paths, state.actions)
        }
        for pid in pids { kill(pid, SIGKILL) }
        for pid in pids {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        for action in actions { action() }
        for path in paths.reversed() {
            removeTree(path)
            // A cgroup folder stays busy for a moment after its last process was reaped.
            let giveUp = ContinuousClock.now + .seconds(2)
            while access(path, F_OK) == 0, rmdir(path) != 0, errno == EBUSY, ContinuousClock.now < giveUp {
                var pause = timespec(tv_sec: 0, tv_nsec: 2_000_000)
                nanosleep(&pause, nil)
            }
        }
    }
}

/// Removes `path` and everything below it, without following symbolic links. Missing is fine.
public func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT == S_IFDIR {
        if let directory = opendir(path) {
            var names: [String] = []
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(directory)
            for name in names { removeTree(path + "/" + name) }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}
