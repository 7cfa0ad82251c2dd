import Glibc

/// The `process` backend's half of the sandbox, done by the agent itself as PID 1 of fresh
/// PID, mount, network, IPC and UTS namespaces (the host created them): private mounts, the image
/// root read-only, its own /proc, a minimal /dev, a tmpfs /tmp, then chroot.
struct SandboxSetup {
    let root: String
    let hostname: String?
    /// The sandbox's memory, MiB: its /tmp holds a quarter of it, so that a method filling
    /// /tmp gets ENOSPC before the cgroup's memory limit makes the OOM killer look for a victim.
    let memoryMB: UInt32?
    /// Root file system name → the host folder holding it, bound read-only under
    /// `/kiln/rootfs/NAME/lower` (see ``RootFilesystems``), where only root may go.
    let rootfsFolders: [String: String]

    /// What failed, with errno.
    struct Failure: Error, CustomStringConvertible {
        let step: String
        let code: Int32
        var description: String { "\(step): \(describeErrno(code))" }
    }

    func enter() throws(Failure) {
        // Nothing mounted here may propagate back to the host.
        try check(mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil), "make / private")
        try check(mount(root, root, nil, UInt(MS_BIND | MS_REC), nil), "bind \(root)")
        try check(mount(nil, root, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY), nil), "remount \(root) read-only")
        try check(mount("proc", root + "/proc", "proc", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil), "mount /proc")
        let scratchMB = max(4, (memoryMB ?? 256) / 4)
        try check(mount("tmpfs", root + "/tmp", "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=1777,size=\(scratchMB)m"), "mount /tmp")
        try DeviceFolder.populate(root + "/dev")
        if !rootfsFolders.isEmpty {
            let folder = root + RootFilesystems.folder
            try check(mount("tmpfs", folder, "tmpfs", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), "mode=700,size=64k"), "mount \(RootFilesystems.folder)")
            for (name, source) in rootfsFolders.sorted(by: { $0.key < $1.key }) {
                let lower = folder + "/" + name + "/lower"
                for path in [folder + "/" + name, lower] where mkdir(path, 0o755) != 0 && errno != EEXIST {
                    throw Failure(step: "mkdir \(path)", code: errno)
                }
                try check(mount(source, lower, nil, UInt(MS_BIND), nil), "bind \(source)")
                try check(mount(nil, lower, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV), nil), "make \(source) read-only")
            }
        }
        try check(chroot(root), "chroot \(root)")
        try check(chdir("/"), "chdir /")
        if let hostname {
            _ = hostname.withCString { sethostname($0, strlen($0)) }
        }
    }

    private func check(_ result: Int32, _ step: String) throws(Failure) {
        if result != 0 { throw Failure(step: step, code: errno) }
    }
}
