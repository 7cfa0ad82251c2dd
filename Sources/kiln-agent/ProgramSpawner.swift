import CKilnHost
import Glibc

/// Starts method programs: in a session (and process group) of their own, signals reset to
/// their defaults, the three standard descriptors from pipes and no other, an environment of the
/// agent's choosing, and as the unprivileged ``MethodUser``: a method cannot signal or trace the
/// agent, open its channel, remount, chroot, or fork past its user's process limit.
enum ProgramSpawner {
    enum Outcome {
        case success(pid_t)
        /// Why it did not start.
        case failure(String)
    }

    /// Where and as whom a method on a root file system starts: chrooted to its overlay, in the
    /// image's working folder, with the image's environment, as the image's user when it names
    /// one other than root.
    struct Placement {
        var root: String
        var workingDirectory: String
        var environment: [String]
        var user: (uid: UInt32, gid: UInt32)?
    }

    /// Who method programs run as.
    struct MethodUser {
        var uid: uid_t
        var gid: gid_t
        /// The processes the user may have at once (0: no limit beyond the host's).
        var maxProcesses: Int

        /// `nobody`, with at most 256 processes: a fork bomb stops there.
        static let nobody = MethodUser(uid: 65534, gid: 65534, maxProcesses: 256)
    }

    /// Set once at start from the options; `nil` runs methods as the agent's own user.
    nonisolated(unsafe) static var user: MethodUser? = .nobody
    /// The method cgroup's `cgroup.procs`, open; -1 for none.
    nonisolated(unsafe) static var cgroupProcs: Int32 = -1
    /// Methods that run on a root file system, by name: where they start (set once at start).
    nonisolated(unsafe) static var placements: [String: Placement] = [:]
    /// Methods whose root file system could not be mounted, with the reason.
    nonisolated(unsafe) static var unplaceable: [String: String] = [:]

    /// What `method`'s program gets, plus `extra` (`NAME=value`): on a root file system the
    /// image's environment, else a PATH over the image's programs and busybox; HOME and TMPDIR
    /// are the scratch folder (`/tmp` inside a root file system).
    static func environment(method: String, scratch: String, extra: [String]) -> [String] {
        guard let placement = placements[method] else {
            return ["PATH=/kiln/bin:/bin:/sbin:/usr/bin:/usr/sbin", "HOME=\(scratch)", "TMPDIR=\(scratch)"] + extra
        }
        let own = placement.environment.filter { !$0.hasPrefix("HOME=") && !$0.hasPrefix("TMPDIR=") }
        let path = own.contains { $0.hasPrefix("PATH=") } ? [] : ["PATH=/usr/local/bin:/usr/bin:/bin:/kiln/bin"]
        return own + path + ["HOME=/tmp", "TMPDIR=/tmp"] + extra
    }

    /// Starts `method`'s program `arguments[0]` in a session of its own: on its root file
    /// system when it has one (the entry is then an absolute path inside it), else searched on
    /// PATH when it has no slash.
    static func spawn(method: String, arguments: [String], environment: [String], stdin: Int32, stdout: Int32, stderr: Int32) -> Outcome {
        if let reason = unplaceable[method] { return .failure(reason) }
        let placement = placements[method]
        guard let name = arguments.first, let program = placement == nil ? resolve(name) : (name.hasPrefix("/") ? name : nil) else {
            return .failure(describeErrno(ENOENT))
        }
        var argv = arguments.map { strdup($0) } + [nil]
        var envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let fds: [Int32] = [stdin, stdout, stderr]
        var error: Int32 = 0
        var step: UnsafePointer<CChar>?
        var user = Self.user
        if let own = placement?.user {
            user = MethodUser(uid: own.uid, gid: own.gid, maxProcesses: Self.user?.maxProcesses ?? MethodUser.nobody.maxProcesses)
        }
        let cgroups: [Int32] = Self.cgroupProcs >= 0 ? [Self.cgroupProcs] : []
        let pid = program.withCString { path in
            fds.withUnsafeBufferPointer { fdBuffer in
                cgroups.withUnsafeBufferPointer { cgroupBuffer in
                    argv.withUnsafeMutableBufferPointer { argvBuffer in
                        envp.withUnsafeMutableBufferPointer { envpBuffer in
                            var request = kiln_spawn_request(
                                path: path, argv: argvBuffer.baseAddress, envp: envpBuffer.baseAddress, fds: fdBuffer.baseAddress,
                                fd_count: 3, namespace_flags: 0, cgroup_procs_fds: cgroupBuffer.baseAddress,
                                cgroup_procs_count: Int32(cgroups.count), die_with_parent: 0,
                                change_user: user == nil ? 0 : 1, uid: user?.uid ?? 0, gid: user?.gid ?? 0,
                                max_processes: user.map { $0.maxProcesses } ?? 0,
                                // The agent shields itself; its methods are the first the killer takes.
                                set_oom_score_adj: 1, oom_score_adj: 500, root: nil, cwd: nil)
                            guard let placement else { return kiln_spawn(&request, &error, &step) }
                            return placement.root.withCString { root in
                                placement.workingDirectory.withCString { cwd in
                                    request.root = root
                                    request.cwd = cwd
                                    return kiln_spawn(&request, &error, &step)
                                }
                            }
                        }
                    }
                }
            }
        }
        if pid > 0 { return .success(pid) }
        let stepName = step.map { String(cString: $0) } ?? "spawn"
        let reason = describeErrno(error == 0 ? EINVAL : error)
        // exec's own failure is the program's; the others say which step failed.
        return .failure(stepName == "exec" ? reason : "\(stepName): \(reason)")
    }

    /// The path of `name`: itself when it has a slash, else the first executable on PATH.
    private static func resolve(_ name: String) -> String? {
        guard !name.contains("/") else { return name }
        for folder in ["/kiln/bin", "/bin", "/sbin", "/usr/bin", "/usr/sbin"] where access(folder + "/" + name, X_OK) == 0 {
            return folder + "/" + name
        }
        return nil
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
