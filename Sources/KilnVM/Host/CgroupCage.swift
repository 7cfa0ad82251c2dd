import Glibc

/// One VM's cgroup, `<hierarchy>/kiln/<pid>-<vm>`, in every controller the layout has: CPU
/// bandwidth (`cpus` cores), a memory cap and a PID cap. Children are placed in it before they
/// execute (``SpawnSpec/cgroupProcsFiles``). ``remove()`` kills whatever is left and removes it.
public final class CgroupCage: Sendable {
    /// The folder that groups Kiln's cgroups in each hierarchy.
    static let group = "kiln"
    /// The most processes a VM may have.
    static let pidsMax = 1024

    public let layout: CgroupLayout
    /// The cage's folder in each hierarchy it uses.
    public let directories: [String]

    /// `cgroup.procs` of each of the cage's folders.
    public var procsFiles: [String] { directories.map { $0 + "/cgroup.procs" } }

    /// Creates the cage named `name` with `limits`.
    public init(layout: CgroupLayout, name: String, limits: ResourceLimits) throws(VMError) {
        self.layout = layout
        switch layout {
        case .v1:
            directories = layout.hierarchies.map { "\($0)/\(Self.group)/\(name)" }
        case .v2(let root):
            try Self.enableControllers(in: root)
            try Self.makeGroup(root + "/" + Self.group)
            try Self.enableControllers(in: root + "/" + Self.group)
            directories = ["\(root)/\(Self.group)/\(name)"]
        }
        for directory in directories {
            try makeDirectories(directory)
            // rmdir works on a cgroup folder once its processes are gone (its files go with it).
            ExitCleanup.shared.removeAtExit(path: directory)
        }
        do {
            try apply(limits)
            try writeControl(file: "pids.max", value: "\(Self.pidsMax)", optional: true)
        } catch {
            remove()
            throw error
        }
    }

    /// Sets the CPU bandwidth and memory cap.
    public func apply(_ limits: ResourceLimits) throws(VMError) {
        let period = 100_000
        let quota = max(1_000, Int((limits.cpus * Double(period)).rounded()))
        let bytes = limits.memoryMB << 20
        switch layout {
        case .v1:
            try writeControl(file: "cpu.cfs_period_us", value: "\(period)")
            try writeControl(file: "cpu.cfs_quota_us", value: "\(quota)")
            try writeControl(file: "memory.limit_in_bytes", value: "\(bytes)")
        case .v2:
            try writeControl(file: "cpu.max", value: "\(quota) \(period)")
            try writeControl(file: "memory.max", value: "\(bytes)")
        }
    }

    /// The CPU time every process in the cage has used so far, user + system, microseconds
    /// (cpuacct's `cpuacct.usage` on v1, `usage_usec` of `cpu.stat` on v2); nil without cpuacct.
    public var cpuTimeUs: UInt64? {
        switch layout {
        case .v1(_, _, _, let cpuacct):
            guard let cpuacct, let directory = directories.first(where: { $0.hasPrefix(cpuacct + "/") }),
                  let bytes = readFile(directory + "/cpuacct.usage") else { return nil }
            return UInt64(String(decoding: bytes.prefix { $0 != 0x0a }, as: UTF8.self)).map { $0 / 1_000 }
        case .v2:
            guard let bytes = readFile(directories[0] + "/cpu.stat") else { return nil }
            return Self.usageMicroseconds(cpuStat: String(decoding: bytes, as: UTF8.self))
        }
    }

    /// `usage_usec` of a v2 `cpu.stat`.
    static func usageMicroseconds(cpuStat: String) -> UInt64? {
        for line in cpuStat.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, fields[0] == "usage_usec" { return UInt64(fields[1]) }
        }
        return nil
    }

    /// Kills every process in the cage, waits until it is empty (up to two seconds), and
    /// removes its folders. Safe to call more than once.
    public func remove() {
        for directory in directories {
            Self.removeGroup(directory)
            ExitCleanup.shared.forget(path: directory)
        }
    }

    /// Removes the cages of processes that no longer exist (left by a worker that was killed).
    public static func sweep(layout: CgroupLayout) {
        for parent in layout.hierarchies {
            let folder = parent + "/" + group
            for name in listDirectory(folder) {
                guard let owner = name.split(separator: "-").first.flatMap({ pid_t($0) }), owner != getpid() else { continue }
                if kill(owner, 0) != 0 && errno == ESRCH { removeGroup(folder + "/" + name) }
            }
        }
    }

    private static func removeGroup(_ directory: String) {
        guard access(directory, F_OK) == 0 else { return }
        let killFile = directory + "/cgroup.kill"
        if access(killFile, W_OK) == 0 { try? writeFile(killFile, Array("1".utf8)) }
        let giveUp = ContinuousClock.now + .seconds(2)
        while rmdir(directory) != 0 && errno == EBUSY && ContinuousClock.now < giveUp {
            let procs = readFile(directory + "/cgroup.procs").map { String(decoding: $0, as: UTF8.self) } ?? ""
            for pid in procs.split(separator: "\n").compactMap({ pid_t($0) }) { kill(pid, SIGKILL) }
            var pause = timespec(tv_sec: 0, tv_nsec: 2_000_000)
            nanosleep(&pause, nil)
        }
    }

    private func writeControl(file: String, value: String, optional: Bool = false) throws(VMError) {
        for directory in directories {
            let path = directory + "/" + file
            if access(path, F_OK) != 0 {
                if optional { continue }
                if case .v1 = layout { continue }  // each v1 folder has its own controller's files
                throw .sandboxUnavailable("\(path) does not exist: the \(file.split(separator: ".")[0]) controller is not enabled")
            }
            try writeFile(path, Array(value.utf8))
        }
    }

    private static func makeGroup(_ path: String) throws(VMError) {
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw .sandboxUnavailable("cannot create \(path): \(String(cString: strerror(errno))); run as root")
        }
    }

    private static func enableControllers(in directory: String) throws(VMError) {
        let path = directory + "/cgroup.subtree_control"
        let current = readFile(path).map { String(decoding: $0, as: UTF8.self) } ?? ""
        for controller in ["cpu", "memory", "pids"] where !current.contains(controller) {
            try? writeFile(path, Array("+\(controller)".utf8))
        }
        let after = readFile(path).map { String(decoding: $0, as: UTF8.self) } ?? ""
        guard after.contains("cpu"), after.contains("memory") else {
            throw .sandboxUnavailable("cannot enable cpu and memory in \(path) (cgroup v2 needs them delegated)")
        }
    }
}
