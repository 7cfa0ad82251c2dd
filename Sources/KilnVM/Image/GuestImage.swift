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
    /// The root file systems' block images, in device order (the first is the guest's
    /// `/dev/vda`).
    public var rootFilesystems: [RootFilesystemImage] { metadata.rootFilesystems }
    /// The block image of `filesystem`.
    public func path(of filesystem: RootFilesystemImage) -> String { directory + "/" + filesystem.file }

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
        /// The root file systems, in device order.
        public var rootFilesystems: [RootFilesystemImage]

        public init(id: String, kernelPackage: String, kernelVersion: String, initrd: String, initrdBytes: Int,
                    agentVersion: String?, manifest: MethodManifest, rootFilesystems: [RootFilesystemImage] = []) {
            self.id = id
            self.kernelPackage = kernelPackage
            self.kernelVersion = kernelVersion
            self.initrd = initrd
            self.initrdBytes = initrdBytes
            self.agentVersion = agentVersion
            self.manifest = manifest
            self.rootFilesystems = rootFilesystems
        }

        enum CodingKeys: String, CodingKey {
            case id
            case kernelPackage = "kernel_package"
            case kernelVersion = "kernel_version"
            case initrd
            case initrdBytes = "initrd_bytes"
            case agentVersion = "agent_version"
            case manifest
            case rootFilesystems = "root_filesystems"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            id = try container.decode(String.self, forKey: .id)
            kernelPackage = try container.decode(String.self, forKey: .kernelPackage)
            kernelVersion = try container.decode(String.self, forKey: .kernelVersion)
            initrd = try container.decode(String.self, forKey: .initrd)
            initrdBytes = try container.decode(Int.self, forKey: .initrdBytes)
            agentVersion = try container.decodeIfPresent(String.self, forKey: .agentVersion)
            manifest = try container.decode(MethodManifest.self, forKey: .manifest)
            rootFilesystems = try container.decodeIfPresent([RootFilesystemImage].self, forKey: .rootFilesystems) ?? []
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

/// A root file system packed into an image: its block image, the guest device it appears as,
/// and how methods start on it.
public struct RootFilesystemImage: Codable, Sendable, Equatable {
    public var name: String
    /// The block image, relative to the image's folder.
    public var file: String
    public var bytes: Int
    /// The guest's block device: `/dev/vda` for the first, `/dev/vdb` next, …
    public var device: String
    public var config: RootFilesystemConfig

    public init(name: String, file: String, bytes: Int, device: String, config: RootFilesystemConfig) {
        self.name = name
        self.file = file
        self.bytes = bytes
        self.device = device
        self.config = config
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
    /// The root file systems' table for the agent (MessagePack): `{name: {device, env, cwd, user?}}`.
    public static let rootFilesystemTable = "/kiln/rootfs.msgpack"
    /// Where the agent mounts the root file systems: `<folder>/<name>/root` is a method's `/`.
    public static let rootFilesystems = "/kiln/rootfs"
    /// The method SDKs for runtimes a root file system brings (`kiln_method.py`); with the
    /// programs' folder, the one part of the initramfs every root file system sees.
    public static let sdk = "/kiln/sdk"
}
