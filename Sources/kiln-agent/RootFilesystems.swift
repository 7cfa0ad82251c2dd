import Glibc
import KilnWire

/// The image's root file systems, as methods run on them. For each, under `/kiln/rootfs/NAME`
/// (a tmpfs only root may enter): `lower`, the read-only image (the guest's block device, or in
/// a sandbox the folder the host mounted it on); `rw`, a tmpfs holding an overlay's upper layer;
/// and `root`, the overlay of the two, with its own `/proc`, a minimal `/dev`, the scratch folder
/// as `/tmp` and the image's programs and SDKs (`/kiln/bin`, `/kiln/sdk`) read-only. A method
/// runs chrooted there. What it wrote outside `/tmp` is wiped when the guest is cleared, by
/// mounting a fresh upper layer (a kept serve runtime keeps the layer it has, as it keeps its
/// memory).
struct RootFilesystems {
    /// Where they are mounted.
    static let folder = "/kiln/rootfs"

    /// One root file system.
    struct Filesystem {
        let name: String
        /// The block device to mount read-only; nil when `lower` is mounted already (a sandbox).
        let device: String?
        /// `NAME=value` pairs from the image.
        let environment: [String]
        let workingDirectory: String
        /// Whom the image names to run as (never root); nil: the agent's method user.
        let user: (uid: UInt32, gid: UInt32)?
        /// What the upper layer holds right after it is mounted (the mount points made there).
        var baseline: Set<String> = []
        /// Whether the overlay is up.
        var mounted = false

        var base: String { RootFilesystems.folder + "/" + name }
        var root: String { base + "/root" }
        var upper: String { base + "/rw/upper" }
    }

    private(set) var filesystems: [String: Filesystem] = [:]
    let scratch: String
    /// The writable layer's size, MiB.
    let writableMB: UInt64

    /// Reads the image's table (`{name: {device, env, cwd, user?}}`); `mountedLowers` names the
    /// ones whose `lower` the sandbox set up already. A missing table: no root file systems.
    init(table path: String, mountedLowers: Set<String>, scratch: String, writableMB: UInt64) {
        self.scratch = scratch
        self.writableMB = max(8, writableMB)
        guard let bytes = readWholeFile(path, limit: 1 << 20) else { return }
        guard case .map(let entries)? = try? MessagePackDecoder().decodeValue(from: bytes) else {
            AgentLog.write("kiln-agent: \(path) is unreadable; no root file systems")
            return
        }
        for entry in entries {
            guard case .string(let name) = entry.key, let device = entry.value["device"]?.stringValue else { continue }
            var environment: [String] = []
            if case .array(let values)? = entry.value["env"] { environment = values.compactMap(\.stringValue) }
            let user = entry.value["user"]?.stringValue.flatMap(Self.parseUser)
            filesystems[name] = Filesystem(
                name: name, device: mountedLowers.contains(name) ? nil : device, environment: environment,
                workingDirectory: entry.value["cwd"]?.stringValue ?? "/", user: user)
        }
    }

    static func parseUser(_ text: String) -> (uid: UInt32, gid: UInt32)? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]), uid != 0 else { return nil }
        return (uid, gid)
    }

    /// Mounts every root file system; one that fails is reported and left out (its methods
    /// then fail to start, saying so).
    mutating func mountAll(folderMounted: Bool) {
        guard !filesystems.isEmpty else { return }
        if !folderMounted, mount("tmpfs", Self.folder, "tmpfs", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), "mode=700,size=64k") != 0 {
            AgentLog.write("kiln-agent: cannot mount \(Self.folder): \(describeErrno(errno)); no root file systems")
            filesystems.removeAll()
            return
        }
        for name in filesystems.keys.sorted() {
            guard var filesystem = filesystems[name] else { continue }
            do {
                if let device = filesystem.device {
                    try make(filesystem.base + "/lower")
                    try check(mount(device, filesystem.base + "/lower", "erofs", UInt(MS_RDONLY | MS_NOSUID | MS_NODEV), nil),
                              "mount \(device) (erofs)")
                }
                try mountWritable(&filesystem)
                filesystems[name] = filesystem
            } catch {
                AgentLog.write("kiln-agent: root file system \(name): \(error)")
            }
        }
    }

    /// Where and how `name`'s methods start; nil when it is not mounted.
    func placement(of name: String) -> ProgramSpawner.Placement? {
        guard let filesystem = filesystems[name], filesystem.mounted else { return nil }
        return ProgramSpawner.Placement(
            root: filesystem.root, workingDirectory: filesystem.workingDirectory, environment: filesystem.environment,
            user: filesystem.user)
    }

    /// Gives every root file system whose upper layer holds writes a fresh one.
    mutating func wipeWrites() {
        for name in filesystems.keys.sorted() {
            guard var filesystem = filesystems[name], filesystem.mounted,
                  Set(Self.names(in: filesystem.upper)) != filesystem.baseline else { continue }
            // Detached, not unmounted: a process that still has it open keeps its copy.
            _ = umount2(filesystem.root, Int32(MNT_DETACH))
            _ = umount2(filesystem.base + "/rw", Int32(MNT_DETACH))
            filesystem.mounted = false
            do {
                try mountWritable(&filesystem)
            } catch {
                AgentLog.write("kiln-agent: root file system \(name): a fresh upper layer: \(error)")
            }
            filesystems[name] = filesystem
        }
    }

    /// The tmpfs upper layer, the overlay, and what goes inside it.
    private func mountWritable(_ filesystem: inout Filesystem) throws(SandboxSetup.Failure) {
        let rw = filesystem.base + "/rw"
        try make(rw)
        try check(mount("tmpfs", rw, "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=755,size=\(writableMB)m"), "mount the upper layer's tmpfs")
        try make(rw + "/upper")
        try make(rw + "/work")
        try make(filesystem.root)
        try check(mount("overlay", filesystem.root, "overlay", UInt(MS_NOSUID | MS_NODEV),
                        "lowerdir=\(filesystem.base)/lower,upperdir=\(rw)/upper,workdir=\(rw)/work"), "mount the overlay")
        let root = filesystem.root
        try make(root + "/proc")
        try check(mount("proc", root + "/proc", "proc", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil), "mount /proc")
        try make(root + "/dev")
        try DeviceFolder.populate(root + "/dev")
        try make(root + "/tmp")
        try check(mount(scratch, root + "/tmp", nil, UInt(MS_BIND), nil), "bind the scratch folder to /tmp")
        for shared in ["/kiln/bin", "/kiln/sdk"] where access(shared, F_OK) == 0 {
            try make(root + shared)
            try check(mount(shared, root + shared, nil, UInt(MS_BIND | MS_REC), nil), "bind \(shared)")
            try check(mount(nil, root + shared, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV), nil),
                      "make \(shared) read-only")
        }
        filesystem.baseline = Set(Self.names(in: filesystem.upper))
        filesystem.mounted = true
    }

    /// The names in a folder (empty when it cannot be read).
    static func names(in path: String) -> [String] {
        opendir(path).map(directoryEntryNames(closing:)) ?? []
    }

    private func make(_ path: String) throws(SandboxSetup.Failure) {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST { throw SandboxSetup.Failure(step: "mkdir \(current)", code: errno) }
        }
    }

    private func check(_ result: Int32, _ step: String) throws(SandboxSetup.Failure) {
        if result != 0 { throw SandboxSetup.Failure(step: step, code: errno) }
    }
}

/// A method's `/dev`: a small tmpfs with the harmless devices bound in from the agent's `/dev`
/// (null, zero, full, random, urandom) and `fd` pointing at `/proc/self/fd`.
enum DeviceFolder {
    static func populate(_ target: String) throws(SandboxSetup.Failure) {
        guard mount("tmpfs", target, "tmpfs", UInt(MS_NOSUID | MS_NOEXEC), "mode=755,size=64k") == 0 else {
            throw SandboxSetup.Failure(step: "mount \(target)", code: errno)
        }
        for device in ["null", "zero", "full", "random", "urandom"] {
            let node = target + "/" + device
            let fd = open(node, O_CREAT | O_WRONLY | O_CLOEXEC, 0o666)
            if fd >= 0 { close(fd) }
            guard mount("/dev/" + device, node, nil, UInt(MS_BIND), nil) == 0 else {
                throw SandboxSetup.Failure(step: "bind /dev/\(device)", code: errno)
            }
        }
        _ = symlink("/proc/self/fd", target + "/fd")
    }
}
