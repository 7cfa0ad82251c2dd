import Foundation
import Glibc

/// A saved, booted guest that VMs are restored from: `ram.img` (the guest's RAM; clones map it
/// privately, copy-on-write) and `vm.state` (device state, ~60 KB). One per image, profile,
/// accelerator and QEMU build. Never modified once written: clones map its memory file.
public struct SnapshotTemplate: Sendable, Equatable {
    /// Names the template: image, profile, accelerator, QEMU build.
    public let key: String
    public let directory: String

    public var memoryFile: String { directory + "/ram.img" }
    public var stateFile: String { directory + "/vm.state" }

    /// The key for an image, profile, accelerator and QEMU version string.
    public static func key(image: GuestImage, profile: VMProfile, accelerator: Accelerator, qemuVersion: String) -> String {
        let qemu = SHA256Text.hex(qemuVersion).prefix(8)
        return "\(image.id.prefix(16))-\(profile.vcpus)c\(profile.memoryMB)m-\(accelerator.rawValue)-\(qemu)"
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
            return template
        }
        building[key] = task
        defer { building[key] = nil }
        return try await task.value
    }
}
