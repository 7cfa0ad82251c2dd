import Foundation
import Glibc
import KilnDigest
import KilnWire
import Logging

/// Builds guest images: Debian's kernel (vmlinux extracted from vmlinuz), an initramfs with
/// busybox-static, kiln-agent and the shared libraries it needs, the virtio modules, an init
/// script, the method programs a manifest names (compiling `swift:<product>` ones first, see
/// ``SwiftProgram``) and the manifest itself, as JSON and as MessagePack for the agent. Images are content-addressed under
/// `<cache>/<sha256>/`: an unchanged image is not rebuilt.
public struct GuestImageBuilder: Sendable {
    /// Bumped whenever the layout of an image changes, so old cache entries are not reused.
    static let formatVersion = "kiln-image-4"

    /// What an image is built from.
    public struct Inputs: Sendable {
        /// The kiln-agent binary (built with the Swift stdlib linked statically).
        public var agent: String
        /// The method manifest; its `programs` paths are relative to its folder.
        public var manifestPath: String
        /// busybox-static.
        public var busybox: String
        /// A concrete kernel package; nil takes what `linux-image-amd64` depends on.
        public var kernelPackage: String?
        /// gzip the initramfs (smaller; slower to boot under TCG).
        public var gzip: Bool
        /// The Python method SDK (`sdk/python/kiln_method.py`), put at `/kiln/sdk` for methods
        /// whose root file system brings Python; nil leaves it out.
        public var pythonSDK: String?
        /// The largest root file system block image (and unpacked OCI layers) accepted.
        public var maxRootFilesystemBytes: Int

        public init(agent: String, manifestPath: String, busybox: String = "/bin/busybox",
                    kernelPackage: String? = nil, gzip: Bool = false, pythonSDK: String? = nil,
                    maxRootFilesystemBytes: Int = 4 << 30) {
            self.agent = agent
            self.manifestPath = manifestPath
            self.busybox = busybox
            self.kernelPackage = kernelPackage
            self.gzip = gzip
            self.pythonSDK = pythonSDK
            self.maxRootFilesystemBytes = maxRootFilesystemBytes
        }
    }

    /// The cache root, e.g. `.local/images`.
    public let cache: String
    let logger: Logger

    public init(cache: String, logger: Logger) {
        self.cache = cache
        self.logger = logger
    }

    /// Builds the image for `inputs`, or returns the cached one with the same content.
    public func build(_ inputs: Inputs) async throws(VMError) -> GuestImage {
        let scratch = cache + "/tmp"
        try makeDirectories(scratch)
        let manifest = try MethodManifest.load(path: inputs.manifestPath)
        let kernel = try await KernelPackage.fetch(cache: cache, package: inputs.kernelPackage, logger: logger)
        let rootFilesystems = try await buildRootFilesystems(
            manifest, manifestFolder: Self.folder(of: inputs.manifestPath), maxBytes: inputs.maxRootFilesystemBytes, scratch: scratch)
        let images = Self.rootFilesystemImages(rootFilesystems)
        var guestManifest = try guestForm(of: manifest)
        guestManifest.methods = try Self.resolveEntries(manifest, rootFilesystems: rootFilesystems, path: inputs.manifestPath)
        let plan = try await makePlan(inputs: inputs, kernel: kernel, manifest: manifest, guestManifest: guestManifest,
                                      rootFilesystems: images, scratch: scratch)

        logger.info("image: hashing \(plan.hostFiles.count) input files")
        let hashes = try await hashFiles(plan.hostFiles, scratch: scratch)
        let fingerprint = plan.fingerprint(
            fileHashes: hashes,
            extra: [Self.formatVersion, "kernel \(kernel.name) \(kernel.version)", "gzip \(inputs.gzip)"]
                + rootFilesystems.map { "rootfs \($0.name) \($0.key)" })
        let id = SHA256.hash(Array(fingerprint.utf8)).hexString
        let directory = cache + "/" + id
        if let cached = try? GuestImage.open(directory: directory) {
            logger.info("image: \(id.prefix(12)) is up to date (cached)")
            return cached
        }

        logger.info("image: building \(id.prefix(12)) (kernel \(kernel.name) \(kernel.version))")
        let staging = cache + "/\(id).tmp-\(getpid())"
        removeTree(staging)
        try makeDirectories(staging)
        do throws(VMError) {
            try await stage(plan, into: staging + "/rootfs", scratch: scratch)
            logger.info("image: packing the initramfs")
            var archive = CPIOArchive()
            try pack(plan: plan, root: staging + "/rootfs", into: &archive)
            archive.finish()
            var initrd = "initrd.cpio"
            try writeFile(staging + "/" + initrd, archive.bytes)
            if inputs.gzip {
                try await HostCommand("gzip", ["-n", "-6", staging + "/" + initrd], timeout: .seconds(300)).run(scratch: scratch)
                initrd += ".gz"
            }
            if Glibc.link(kernel.vmlinux, staging + "/vmlinux") != 0 {
                try copyFile(kernel.vmlinux, to: staging + "/vmlinux", mode: 0o644)
            }
            // The block images: hard links into the root file system cache, where they can be.
            if !images.isEmpty { try makeDirectories(staging + "/rootfs-images") }
            for (image, built) in zip(images, rootFilesystems) where Glibc.link(built.image, staging + "/" + image.file) != 0 {
                try await HostCommand("cp", ["--reflink=auto", "--", built.image, staging + "/" + image.file], timeout: .seconds(600))
                    .run(scratch: scratch)
            }
            let metadata = GuestImage.Metadata(
                id: id, kernelPackage: kernel.name, kernelVersion: kernel.version, initrd: initrd,
                initrdBytes: fileSize(staging + "/" + initrd) ?? 0, agentVersion: nil, manifest: guestManifest,
                rootFilesystems: images)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let json: Data
            do { json = try encoder.encode(metadata) } catch { throw .imageBuildFailed(step: "writing image.json", reason: "\(error)") }
            try writeFile(staging + "/image.json", Array(json))
            try writeFile(staging + "/fingerprint.txt", Array(fingerprint.utf8))
            try writeFile(staging + "/.complete", [])
            removeTree(directory)
            guard rename(staging, directory) == 0 else {
                throw .hostFailure("rename \(staging) → \(directory): \(String(cString: strerror(errno)))")
            }
        } catch {
            removeTree(staging)
            throw error
        }
        let image = try GuestImage.open(directory: directory)
        logger.info("image: \(id.prefix(12)) ready, initramfs \(image.metadata.initrdBytes / 1024) KiB")
        return image
    }

    /// Points `<cache>/<name>` at `image` (a relative symbolic link, replaced atomically).
    public func link(_ image: GuestImage, as name: String) throws(VMError) {
        let temporary = cache + "/.\(name).tmp-\(getpid())"
        unlink(temporary)
        guard symlink(image.id, temporary) == 0, rename(temporary, cache + "/" + name) == 0 else {
            throw .hostFailure("cannot link \(cache)/\(name): \(String(cString: strerror(errno)))")
        }
    }

    /// The manifest with program names replaced by their guest paths in `programs`.
    private func guestForm(of manifest: MethodManifest) throws(VMError) -> MethodManifest {
        var programs: [String: String] = [:]
        for name in manifest.programs.keys { programs[name] = MethodManifest.guestProgramFolder + "/" + name }
        return MethodManifest(version: manifest.version, programs: programs, methods: manifest.methods)
    }

    /// The folder a manifest's relative paths start from.
    static func folder(of manifestPath: String) -> String {
        let folder = (manifestPath as NSString).deletingLastPathComponent
        return folder.isEmpty ? "." : folder
    }

    private func makePlan(
        inputs: Inputs, kernel: KernelPackage, manifest: MethodManifest, guestManifest: MethodManifest,
        rootFilesystems: [RootFilesystemImage], scratch: String
    ) async throws(VMError) -> InitramfsPlan {
        var plan = InitramfsPlan()
        for folder in ["/proc", "/sys", "/dev", "/run", "/etc", "/bin", "/sbin", "/usr/bin", "/usr/sbin"] {
            plan.directory(folder)
        }
        plan.directory(GuestLayout.scratch, mode: 0o1777)

        guard access(inputs.busybox, X_OK) == 0 else {
            throw .imageBuildFailed(step: "adding busybox", reason: "\(inputs.busybox) is missing; install busybox-static")
        }
        plan.add("/bin/busybox", .hostFile(inputs.busybox, mode: 0o755, strip: false))
        let applets = try await HostCommand(inputs.busybox, ["--list"], timeout: .seconds(30)).run(scratch: scratch)
        for applet in applets.stdoutText.split(separator: "\n").map(String.init)
        where !applet.isEmpty && applet != "busybox" && !applet.contains("/") {
            plan.add("/bin/" + applet, .symlink("busybox"))
        }

        guard access(inputs.agent, X_OK) == 0 else {
            throw .imageBuildFailed(step: "adding kiln-agent", reason: "\(inputs.agent) is missing; run `make guest-binaries`")
        }
        plan.add(GuestLayout.agent, .hostFile(inputs.agent, mode: 0o755, strip: true))
        var programs = [inputs.agent]
        let manifestFolder = Self.folder(of: inputs.manifestPath)
        for (name, hostPath) in manifest.programs.sorted(by: { $0.key < $1.key }) {
            let resolved: String
            if let swift = SwiftProgram(programValue: hostPath) {
                resolved = try await swift.build(manifestFolder: manifestFolder, scratch: scratch, logger: logger)
            } else {
                resolved = hostPath.hasPrefix("/") ? hostPath : manifestFolder + "/" + hostPath
            }
            guard access(resolved, X_OK) == 0 else {
                throw .imageBuildFailed(step: "adding program \(name)", reason: "\(resolved) is missing or not executable")
            }
            let file = try ProgramFile.inspect(resolved, name: name)
            try file.requireRunnable(path: resolved, name: name) { plan.entries[$0] != nil }
            plan.add(MethodManifest.guestProgramFolder + "/" + name, .hostFile(resolved, mode: 0o755, strip: file.isStrippable))
            if file.isStrippable { programs.append(resolved) }
        }
        for program in programs {
            for library in try await SharedLibraries.of(program, scratch: scratch) {
                plan.add(library, .hostFile(library, mode: 0o755, strip: false))
            }
        }

        // Block devices, erofs and overlayfs only for an image with root file systems.
        let modules = KernelPackage.moduleLoadOrder + (rootFilesystems.isEmpty ? [] : KernelPackage.rootFilesystemModules)
        for module in modules {
            plan.add(GuestLayout.modules + "/\(module).ko", .hostFile(kernel.module(module), mode: 0o644, strip: false))
        }
        plan.add("/init", .text(InitScript.text(modules: modules), mode: 0o755))
        if !rootFilesystems.isEmpty {
            plan.directory(GuestLayout.rootFilesystems)
            plan.add(GuestLayout.rootFilesystemTable, .bytes(try Self.agentTable(rootFilesystems), mode: 0o644))
        }
        if let sdk = inputs.pythonSDK {
            guard access(sdk, R_OK) == 0 else {
                throw .imageBuildFailed(step: "adding the Python SDK", reason: "\(sdk) is missing")
            }
            plan.add(GuestLayout.sdk + "/kiln_method.py", .hostFile(sdk, mode: 0o644, strip: false))
        }
        plan.add("/etc/passwd", .text("root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", mode: 0o644))
        plan.add("/etc/group", .text("root:x:0:\nnogroup:x:65534:\n", mode: 0o644))
        plan.add("/etc/hostname", .text("kiln-guest\n", mode: 0o644))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let manifestJSON = (try? encoder.encode(guestManifest)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        plan.add(GuestLayout.manifest, .text(manifestJSON + "\n", mode: 0o644))
        do {
            // Keys sorted: a Swift dictionary's order changes from one process to the next, and
            // with it the image's hash (every build was a new image, and its template booted again).
            let unordered = try MessagePackDecoder().decodeValue(from: MessagePackEncoder().encode(guestManifest))
            plan.add(GuestLayout.agentManifest, .bytes(try MessagePackEncoder().encode(unordered.sortingKeys()), mode: 0o644))
        } catch {
            throw .imageBuildFailed(step: "writing \(GuestLayout.agentManifest)", reason: "\(error)")
        }
        return plan
    }

    private func hashFiles(_ files: [String], scratch: String) async throws(VMError) -> [String: String] {
        let unique = Array(Set(files)).sorted()
        guard !unique.isEmpty else { return [:] }
        let output = try await HostCommand("sha256sum", ["--"] + unique, timeout: .seconds(300)).run(scratch: scratch)
        var hashes: [String: String] = [:]
        for line in output.stdoutText.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            hashes[String(parts[1].drop(while: { $0 == " " || $0 == "*" }))] = String(parts[0])
        }
        return hashes
    }

    /// Copies the plan into a real tree at `root`.
    private func stage(_ plan: InitramfsPlan, into root: String, scratch: String) async throws(VMError) {
        try makeDirectories(root)
        var stripped = 0
        for path in plan.sortedPaths {
            let target = root + path
            switch plan.entries[path]! {
            case .directory(let mode):
                try makeDirectories(target)
                chmod(target, mode_t(mode))
            case .hostFile(let source, let mode, let strip):
                if strip, HostCommand.resolve("strip") != nil {
                    try await HostCommand("strip", ["--strip-unneeded", "-o", target, source], timeout: .seconds(120))
                        .run(scratch: scratch)
                    chmod(target, mode_t(mode))
                    stripped += 1
                } else {
                    try copyFile(source, to: target, mode: mode_t(mode))
                }
            case .text(let text, let mode):
                try writeFile(target, Array(text.utf8), mode: mode_t(mode))
            case .bytes(let bytes, let mode):
                try writeFile(target, bytes, mode: mode_t(mode))
            case .symlink(let destination):
                unlink(target)
                guard symlink(destination, target) == 0 else {
                    throw .hostFailure("symlink \(target): \(String(cString: strerror(errno)))")
                }
            }
        }
        logger.info("image: staged \(plan.entries.count) entries (\(stripped) binaries stripped)")
    }

    /// Packs the staged tree into `archive`, in plan order, plus the device nodes the kernel needs
    /// before devtmpfs is mounted.
    private func pack(plan: InitramfsPlan, root: String, into archive: inout CPIOArchive) throws(VMError) {
        for path in plan.sortedPaths {
            switch plan.entries[path]! {
            case .directory(let mode):
                archive.add(path, .directory, mode: mode)
            case .hostFile(_, let mode, _), .text(_, let mode), .bytes(_, let mode):
                guard let bytes = readFile(root + path) else { throw .hostFailure("cannot read staged \(root + path)") }
                archive.add(path, .file(bytes, executable: mode & 0o111 != 0), mode: mode)
            case .symlink(let destination):
                archive.add(path, .symlink(target: destination))
            }
        }
        archive.add("/dev/console", .characterDevice(major: 5, minor: 1), mode: 0o600)
        archive.add("/dev/null", .characterDevice(major: 1, minor: 3), mode: 0o666)
    }
}
