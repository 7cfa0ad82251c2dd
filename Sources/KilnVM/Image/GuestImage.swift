import Foundation

/// A built guest image on disk, `<cache>/<id>/`: the kernel, the initramfs, the same tree unpacked
/// (the `process` backend runs in it), and `image.json` describing it. Immutable once built:
/// VMs and snapshot templates map its files.
public struct GuestImage: Sendable, Equatable {
    /// The content hash the folder is named by.
    public let id: String
    public let directory: String
    public let metadata: Metadata

    /// The uncompressed kernel, booted by PVH.
    public var kernel: String { directory + "/vmlinux" }
    /// The initramfs (newc cpio, possibly gzip-compressed).
    public var initrd: String { directory + "/" + metadata.initrd }
    /// The unpacked root file system, for the `process` backend.
    public var rootFilesystem: String { directory + "/rootfs" }
    /// The agent inside the root file system.
    public var agentPath: String { rootFilesystem + GuestLayout.agent }
    /// The methods this image carries, with their guest entries.
    public var manifest: MethodManifest { metadata.manifest }

    /// What `image.json` says.
    public struct Metadata: Codable, Sendable, Equatable {
        public var id: String
        public var kernelPackage: String
        public var kernelVersion: String
        public var initrd: String
        public var initrdBytes: Int
        public var agentVersion: String?
        /// The manifest as the guest sees it: programs are guest paths.
        public var manifest: MethodManifest

        enum CodingKeys: String, CodingKey {
            case id
            case kernelPackage = "kernel_package"
            case kernelVersion = "kernel_version"
            case initrd
            case initrdBytes = "initrd_bytes"
            case agentVersion = "agent_version"
            case manifest
        }
    }

    /// Opens the image in `directory`.
    /// - Throws: ``VMError/imageMissing(path:hint:)`` when it is absent or incomplete.
    public static func open(directory: String) throws(VMError) -> GuestImage {
        let hint = "build it with `make image` (or `kiln image build`)"
        guard access(directory + "/.complete", F_OK) == 0, let bytes = readFile(directory + "/image.json") else {
            throw .imageMissing(path: directory, hint: hint)
        }
        let metadata: Metadata
        do {
            metadata = try JSONDecoder().decode(Metadata.self, from: Data(bytes))
        } catch {
            throw .imageMissing(path: directory, hint: "image.json is unreadable (\(error)); \(hint)")
        }
        let resolved = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        return GuestImage(id: metadata.id, directory: resolved, metadata: metadata)
    }

    /// The image a checkout's tests and benchmarks use: `$KILN_IMAGE`, else
    /// `<root>/.local/images/current` (the link `kiln image build --link current` writes).
    public static func current(repositoryRoot: String) throws(VMError) -> GuestImage {
        if let explicit = ProcessInfo.processInfo.environment["KILN_IMAGE"], !explicit.isEmpty {
            return try open(directory: explicit)
        }
        return try open(directory: repositoryRoot + "/.local/images/current")
    }
}

/// Where things live inside the guest.
public enum GuestLayout {
    public static let agent = "/kiln/agent"
    public static let manifest = "/kiln/methods.json"
    /// The same manifest in MessagePack, for the agent (which has no JSON parser): which methods
    /// run in serve mode, which start warm.
    public static let agentManifest = "/kiln/methods.msgpack"
    public static let modules = "/lib/kiln-modules"
    /// The methods' working directory, wiped by `reset`.
    public static let scratch = "/tmp"
    /// The guest's cgroup for method programs (memory and process limits); the agent places
    /// every method in it.
    public static let methodCgroup = "/sys/fs/cgroup/methods"
    /// The virtio-serial port name the agent listens on.
    public static let agentPortName = "agent"
}
