import Glibc
import Logging

/// The image's root file systems mounted on the host for the `process` backend: each block
/// image read-only through a loop device, once per driver, under the driver's run folder; where
/// the host gives no loop devices (a container), the image's files extracted there instead
/// (`fsck.erofs --extract`: the same files, slower to set up). The sandboxes bind them in,
/// read-only (see the agent's `--rootfs`); they are detached at shutdown and at exit, and a
/// crashed driver's are detached by the next ``RunDirectory`` sweep.
struct HostRootFilesystems {
    /// Root file system name → the folder it is mounted on.
    let folders: [String: String]

    /// Mounts every root file system of `image` below `runFolder`, in a folder of this
    /// driver's own (two drivers of a process must not share mounts: each detaches its own).
    static func mount(_ image: GuestImage, runFolder: String, logger: Logger) async throws(VMError) -> HostRootFilesystems {
        guard !image.rootFilesystems.isEmpty else { return HostRootFilesystems(folders: [:]) }
        let base = runFolder + "/rootfs-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        var folders: [String: String] = [:]
        ExitCleanup.shared.atExit { RunDirectory.detachMounts(below: base) }
        for filesystem in image.rootFilesystems {
            let folder = base + "/" + filesystem.name
            try makeDirectories(folder)
            do {
                try await HostCommand("mount", ["-t", "erofs", "-o", "loop,ro,nodev,nosuid", image.path(of: filesystem), folder],
                                      timeout: .seconds(60)).run(scratch: runFolder)
            } catch let mountError {
                logger.warning("cannot mount root file system \(filesystem.name) through a loop device (\(mountError)); extracting its files instead")
                do {
                    try await HostCommand("fsck.erofs", ["--extract=\(folder)", "--preserve", "--overwrite", image.path(of: filesystem)],
                                          timeout: .seconds(600)).run(scratch: runFolder)
                } catch {
                    RunDirectory.detachMounts(below: base)
                    throw .sandboxUnavailable("cannot mount root file system \(filesystem.name) (\(image.path(of: filesystem))) on \(folder) "
                        + "(\(mountError)), nor extract it (\(error))")
                }
            }
            logger.debug("mounted root file system \(filesystem.name) on \(folder)")
            folders[filesystem.name] = folder
        }
        return HostRootFilesystems(folders: folders)
    }

    /// The agent's options that bind them in.
    var agentArguments: [String] {
        folders.sorted { $0.key < $1.key }.flatMap { ["--rootfs", "\($0.key)=\($0.value)"] }
    }

    /// Detaches them.
    func unmount() {
        for folder in folders.values { _ = umount2(folder, Int32(MNT_DETACH)) }
    }
}
