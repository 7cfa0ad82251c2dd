/// Where this host's cgroup controllers are mounted: v1 (one hierarchy per controller, as on
/// this project's hosts) or v2 (the unified hierarchy with cpu and memory available).
public enum CgroupLayout: Sendable, Equatable {
    /// cgroup v1: the mount points of the cpu, memory and (optional) pids and cpuacct controllers
    /// (cpuacct is often mounted with cpu, at the same point).
    case v1(cpu: String, memory: String, pids: String?, cpuacct: String? = nil)
    /// cgroup v2: the unified hierarchy's mount point.
    case v2(root: String)

    /// Reads the layout from `/proc/self/mounts`-style text. v1 wins when its cpu and memory
    /// controllers are mounted (a hybrid host's v2 hierarchy then holds no controllers); v2 is
    /// used when `controllersOfV2` (the root's `cgroup.controllers`) offers cpu and memory.
    public static func detect(mounts: String, controllersOfV2: (String) -> String?) -> CgroupLayout? {
        var cpu: String?
        var memory: String?
        var pids: String?
        var cpuacct: String?
        var unified: String?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 4 else { continue }
            let mountPoint = String(fields[1])
            let options = fields[3].split(separator: ",").map(String.init)
            switch fields[2] {
            case "cgroup":
                if options.contains("cpu") { cpu = mountPoint }
                if options.contains("memory") { memory = mountPoint }
                if options.contains("pids") { pids = mountPoint }
                if options.contains("cpuacct") { cpuacct = mountPoint }
            case "cgroup2":
                if unified == nil { unified = mountPoint }
            default:
                break
            }
        }
        if let cpu, let memory { return .v1(cpu: cpu, memory: memory, pids: pids, cpuacct: cpuacct) }
        if let unified, let available = controllersOfV2(unified) {
            let names = Set(available.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
            if names.contains("cpu") && names.contains("memory") { return .v2(root: unified) }
        }
        return nil
    }

    /// The mount point of each controller hierarchy a cage has a folder in, each once.
    var hierarchies: [String] {
        switch self {
        case .v1(let cpu, let memory, let pids, let cpuacct):
            var points = [cpu, memory]
            for point in [pids, cpuacct].compactMap({ $0 }) where !points.contains(point) { points.append(point) }
            return points
        case .v2(let root):
            return [root]
        }
    }

    /// This host's layout, or nil without usable cpu and memory controllers.
    public static func current() -> CgroupLayout? {
        guard let mounts = readFile("/proc/self/mounts") else { return nil }
        return detect(mounts: String(decoding: mounts, as: UTF8.self)) { root in
            readFile(root + "/cgroup.controllers").map { String(decoding: $0, as: UTF8.self) }
        }
    }
}
