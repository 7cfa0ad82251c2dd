import Foundation
import Glibc

/// The folder for one process's live VMs: `<base>/<pid>/<vm-id>/…` (console logs, state that
/// must not outlive a VM). Created on first use; folders of processes that are gone are swept;
/// removed at exit.
public struct RunDirectory: Sendable {
    /// `<base>/<this pid>`.
    public let path: String

    /// The default base: `$KILN_RUN_DIR`, else `$TMPDIR/kiln-run`, else `/tmp/kiln-run`. Kept
    /// short: QEMU socket paths below it must stay under 108 bytes.
    public static var defaultBase: String {
        if let base = getenv("KILN_RUN_DIR") { return String(cString: base) }
        let temporary = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        return temporary + "/kiln-run"
    }

    /// Creates (or reuses) this process's folder below `base`, sweeping those of dead processes.
    public init(base: String = RunDirectory.defaultBase) throws(VMError) {
        try makeDirectories(base)
        Self.sweep(base: base)
        path = base + "/\(getpid())"
        try makeDirectories(path)
        ExitCleanup.shared.removeAtExit(path: path)
    }

    /// A fresh folder for one VM.
    public func makeVMDirectory(id: String) throws(VMError) -> String {
        let directory = path + "/" + id
        try makeDirectories(directory)
        return directory
    }

    /// Removes the folders of processes that no longer exist.
    static func sweep(base: String) {
        guard let directory = opendir(base) else { return }
        var stale: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = pid_t(name), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { stale.append(base + "/" + name) }
        }
        closedir(directory)
        for path in stale {
            // A sandbox driver's root file systems may still be mounted there.
            detachMounts(below: path)
            removeTree(path)
        }
    }

    /// Detaches every mount at or below `path` (deepest first), so that the folder can go.
    public static func detachMounts(below path: String) {
        let text = String(decoding: readFile("/proc/self/mountinfo") ?? [], as: UTF8.self)
        let points = text.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            // Spaces and such in mount points are written as octal escapes.
            let point = String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
            return point == path || point.hasPrefix(path + "/") ? point : nil
        }
        for point in points.sorted(by: { $0.count > $1.count }) { _ = umount2(point, Int32(MNT_DETACH)) }
    }
}

/// `mkdir -p`.
func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(VMError) {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, mode) != 0 && errno != EEXIST {
            throw .hostFailure("mkdir \(current): \(String(cString: strerror(errno)))")
        }
    }
}
