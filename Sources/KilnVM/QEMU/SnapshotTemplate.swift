import Foundation
import Glibc

/// A saved, booted guest that VMs are restored from: `ram.img` (the guest's RAM; clones map it
/// privately, copy-on-write) and `vm.state` (device state, ~60 KB). One per image, profile,
/// accelerator and QEMU build. Never modified once written: clones map its memory file.
public struct SnapshotTemplate: Sendable, Equatable {
    /// Names the template: image, profile (with its memory ceiling), accelerator, QEMU build.
    public let key: String
    public let directory: String

    public var memoryFile: String { directory + "/ram.img" }
    public var stateFile: String { directory + "/vm.state" }

    /// The key for an image, profile, accelerator and QEMU build. The last part also hashes the
    /// restore command line's shape (machine, CPU, devices; not paths): a template saved by code
    /// that built a different machine is never restored into this one.
    public static func key(image: GuestImage, profile: VMProfile, accelerator: Accelerator, qemuVersion: String) -> String {
        let shape = QEMUCommandLine(accelerator: accelerator, vcpus: profile.vcpus, memoryMB: profile.bootMemoryMB,
                                    balloon: profile.memoryCeilingMB != nil, start: .restore(memoryFile: "RAM"), consoleLog: "CONSOLE",
                                    agentSocketFD: 3, qmpSocketFD: 4,
                                    blockDevices: image.rootFilesystems.map { "BLOCK-\($0.name)" }).arguments.joined(separator: " ")
        let machine = SHA256Text.hex(qemuVersion + "\n" + shape).prefix(8)
        let ceiling = profile.memoryCeilingMB.map { "-\($0)max" } ?? ""
        return "\(image.id.prefix(16))-\(profile.vcpus)c\(profile.memoryMB)m\(ceiling)-\(accelerator.rawValue)-\(machine)"
    }

    /// The template in `root` for `key`, when a complete one is there.
    static func existing(root: String, key: String) -> SnapshotTemplate? {
        let template = SnapshotTemplate(key: key, directory: root + "/" + key)
        guard access(template.directory + "/.complete", F_OK) == 0,
              access(template.memoryFile, R_OK) == 0, access(template.stateFile, R_OK) == 0
        else { return nil }
        return template
    }
}

/// Builds each template once per process, even when many provisions ask for it at the same time.
actor SnapshotTemplateStore {
    let root: String
    private var building: [String: Task<SnapshotTemplate, any Error>] = [:]

    init(root: String) {
        self.root = root
    }

    /// The template for `key`: from disk, or built by `build` (which writes into the folder it
    /// is given; the folder is renamed into place when `build` returns).
    func template(
        key: String, build: @escaping @Sendable (_ staging: String) async throws -> Void
    ) async throws -> SnapshotTemplate {
        if let existing = SnapshotTemplate.existing(root: root, key: key) { return existing }
        if let task = building[key] { return try await task.value }
        let root = self.root
        let task = Task<SnapshotTemplate, any Error> {
            try makeDirectories(root)
            let staging = root + "/\(key).tmp-\(getpid())"
            removeTree(staging)
            try makeDirectories(staging)
            do {
                try await build(staging)
                try writeFile(staging + "/.complete", [])
            } catch {
                removeTree(staging)
                throw error
            }
            let final = root + "/" + key
            if rename(staging, final) != 0 {
                // Another process finished the same template first: use theirs.
                removeTree(staging)
            }
            guard let template = SnapshotTemplate.existing(root: root, key: key) else {
                throw VMError.hostFailure("snapshot template \(final) is incomplete after building it")
            }
            SnapshotTemplateStore.removeSuperseded(by: key, in: root)
            return template
        }
        building[key] = task
        defer { building[key] = nil }
        return try await task.value
    }

    /// Removes templates of the same image, profile and accelerator made for another machine
    /// shape or QEMU build (their key differs only in its last part), unless a process maps them.
    static func removeSuperseded(by key: String, in root: String) {
        guard let cut = key.lastIndex(of: "-") else { return }
        let prefix = key[...cut]
        let inUse = ImageCachePruner.pathsInUse()
        for name in listDirectory(root) where name.hasPrefix(prefix) && name != key && !name.contains(".tmp-") {
            let path = root + "/" + name
            if !inUse.contains(where: { $0.hasPrefix(path) }) { removeTree(path) }
        }
    }
}
