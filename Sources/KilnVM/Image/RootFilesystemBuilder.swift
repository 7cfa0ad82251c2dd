import Foundation
import Glibc
import KilnDigest
import Logging

/// How a method starts on its root file system: the image's environment, working folder and
/// user (an OCI image's config; the defaults elsewhere) and, for an OCI image, the entry its
/// Entrypoint and Cmd make.
public struct RootFilesystemConfig: Codable, Sendable, Equatable {
    /// `NAME=value` pairs.
    public var env: [String]
    public var workingDir: String
    /// `uid:gid` to run as; nil: the agent's method user (nobody). Root is never used.
    public var user: String?
    /// Entrypoint followed by Cmd; empty when the source has none.
    public var entry: [String]

    public init(env: [String] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                workingDir: String = "/", user: String? = nil, entry: [String] = []) {
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.entry = entry
    }

    enum CodingKeys: String, CodingKey {
        case env
        case workingDir = "working_dir"
        case user, entry
    }
}

/// Builds the root file systems a manifest names into read-only erofs block images (lz4), cached
/// by content under `<cache>/rootfs/`: `<key>.erofs`, its listing (`<key>.index`, see
/// ``RootFilesystemIndex``) and its config (`<key>.json`). The key covers the source (the
/// package list and the apt sources it is fetched from, the archive's bytes, the folder's files),
/// the copied files and the packing, so an unchanged root file system is never built twice.
struct RootFilesystemBuilder {
    /// Bumped whenever packing changes, so old cache entries are not reused.
    static let formatVersion = "kiln-rootfs-1"
    /// The packing: erofs with lz4, timestamps and UUID fixed (the same tree packs the same bytes).
    static let packArguments = ["--quiet", "-zlz4", "-T0", "-U00000000-0000-0000-0000-000000000000"]

    /// A packed root file system.
    struct Built: Sendable {
        var name: String
        var key: String
        var image: String
        var bytes: Int
        var index: RootFilesystemIndex
        var config: RootFilesystemConfig
    }

    let cache: String
    /// The largest block image accepted.
    let maxBytes: Int
    let logger: Logger

    var folder: String { cache + "/rootfs" }

    /// The root file system `name`, from the cache or built now.
    func build(name: String, spec: RootFilesystemSpec, manifestFolder: String, scratch: String) async throws(VMError) -> Built {
        let step = "building root file system \(name)"
        try makeDirectories(folder)
        let key = try await key(of: spec, manifestFolder: manifestFolder, scratch: scratch, step: step)
        if let cached = cached(name: name, key: key) {
            logger.info("image: root file system \(name) is up to date (cached, \(cached.bytes / 1_048_576) MiB)")
            return cached
        }
        let work = scratch + "/rootfs-\(getpid())-\(name)"
        removeTree(work)
        try makeDirectories(work)
        defer { removeTree(work) }
        let tree = work + "/tree"
        let started = ContinuousClock.now
        var config = RootFilesystemConfig()
        switch spec.source {
        case .debian(let debian):
            logger.info("image: root file system \(name): mmdebstrap \(debian.suite) with \(debian.packages.joined(separator: ", ")) (about half a minute, once)")
            try await HostCommand("mmdebstrap", ["--quiet", "--variant=essential", "--include=" + debian.packages.joined(separator: ","),
                                                 debian.suite, tree], timeout: .seconds(1_800)).run(scratch: scratch)
        case .directory(let source):
            let path = resolve(source, in: manifestFolder)
            guard isDirectory(path) else { throw .imageBuildFailed(step: step, reason: "\(path) is not a folder") }
            logger.info("image: root file system \(name): copying \(path)")
            try makeDirectories(tree)
            try await HostCommand("cp", ["-a", "--", path + "/.", tree], timeout: .seconds(1_800)).run(scratch: scratch)
        case .oci(let archive):
            let path = resolve(archive, in: manifestFolder)
            logger.info("image: root file system \(name): unpacking the OCI image \(path)")
            config = try await OCIImageUnpacker(archive: path, scratch: work, logger: logger).unpack(into: tree)
        }
        for (guest, host) in spec.copy.sorted(by: { $0.key < $1.key }) {
            let source = resolve(host, in: manifestFolder)
            guard access(source, R_OK) == 0 else {
                throw .imageBuildFailed(step: step, reason: "copy \(guest): \(source) does not exist")
            }
            let target = tree + guest
            try makeDirectories((target as NSString).deletingLastPathComponent)
            removeTree(target)
            // The files become root's: the method reads them, and never as their owner.
            try await HostCommand("cp", ["-R", "--preserve=mode,timestamps,links", "--", source, target], timeout: .seconds(600))
                .run(scratch: scratch)
        }

        let listing = try await HostCommand("find", RootFilesystemIndex.findArguments, in: tree, timeout: .seconds(600)).run(scratch: scratch)
        logger.info("image: root file system \(name): packing erofs (lz4)")
        let staged = folder + "/\(key).tmp-\(getpid())"
        try await HostCommand("mkfs.erofs", Self.packArguments + [staged, tree], timeout: .seconds(1_800)).run(scratch: scratch)
        let bytes = fileSize(staged) ?? 0
        guard bytes <= maxBytes else {
            unlink(staged)
            throw .imageBuildFailed(step: step, reason: "its image is \(bytes / 1_048_576) MiB, over the bound of \(maxBytes / 1_048_576) MiB (--max-rootfs-mb)")
        }
        try writeFile(folder + "/\(key).index", listing.stdout)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            try writeFile(folder + "/\(key).json", Array(try encoder.encode(config)))
        } catch let error as VMError {
            throw error
        } catch {
            throw .imageBuildFailed(step: step, reason: "writing its config: \(error)")
        }
        guard rename(staged, folder + "/\(key).erofs") == 0 else {
            throw .hostFailure("rename \(staged): \(String(cString: strerror(errno)))")
        }
        logger.info("image: root file system \(name): \(bytes / 1_048_576) MiB in \(started.duration(to: .now).text)")
        return Built(name: name, key: key, image: folder + "/\(key).erofs", bytes: bytes, index: RootFilesystemIndex(listing: listing.stdout),
                     config: config)
    }

    private func cached(name: String, key: String) -> Built? {
        let image = folder + "/\(key).erofs"
        guard let bytes = fileSize(image), let listing = readFile(folder + "/\(key).index"),
              let json = readFile(folder + "/\(key).json"),
              let config = try? JSONDecoder().decode(RootFilesystemConfig.self, from: Data(json)) else { return nil }
        return Built(name: name, key: key, image: image, bytes: bytes, index: RootFilesystemIndex(listing: listing), config: config)
    }

    /// The cache key: what the source is, the copied files' contents, the packing.
    private func key(of spec: RootFilesystemSpec, manifestFolder: String, scratch: String, step: String) async throws(VMError) -> String {
        var parts = [Self.formatVersion, Self.packArguments.joined(separator: " ")]
        switch spec.source {
        case .debian(let debian):
            // The same list from another mirror or suite is another root file system.
            let sources = ["/etc/apt/sources.list"] + listDirectory("/etc/apt/sources.list.d").map { "/etc/apt/sources.list.d/" + $0 }
            let text = sources.compactMap(readFile).map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\n")
            parts += ["debian \(debian.suite) \(debian.packages.sorted().joined(separator: ","))", "sources \(text)"]
        case .directory(let source):
            let path = resolve(source, in: manifestFolder)
            guard isDirectory(path) else { throw .imageBuildFailed(step: step, reason: "\(path) is not a folder") }
            parts.append("directory " + (try await treeFingerprint(path, scratch: scratch)))
        case .oci(let archive):
            let path = resolve(archive, in: manifestFolder)
            guard access(path, R_OK) == 0 else { throw .imageBuildFailed(step: step, reason: "the OCI archive \(path) does not exist") }
            let sum = try await HostCommand("sha256sum", ["--", path], timeout: .seconds(600)).run(scratch: scratch)
            parts.append("oci " + (sum.stdoutText.split(separator: " ").first.map(String.init) ?? ""))
        }
        for (guest, host) in spec.copy.sorted(by: { $0.key < $1.key }) {
            let source = resolve(host, in: manifestFolder)
            guard access(source, R_OK) == 0 else {
                throw .imageBuildFailed(step: step, reason: "copy \(guest): \(source) does not exist")
            }
            parts.append("copy \(guest) " + (try await treeFingerprint(source, scratch: scratch)))
        }
        return SHA256.hash(Array(parts.joined(separator: "\n").utf8)).hexString
    }

    /// The names, kinds, modes, link targets and file contents under `path` (a file or a folder).
    private func treeFingerprint(_ path: String, scratch: String) async throws(VMError) -> String {
        let script = #"cd -- "$1" 2>/dev/null && { find . -printf '%y %m %p %l\n' | sort; find . -type f -print0 | sort -z | xargs -0r sha256sum; } || sha256sum -- "$1""#
        let output = try await HostCommand("/bin/sh", ["-c", script, "sh", path], timeout: .seconds(1_800)).run(scratch: scratch)
        return SHA256.hash(output.stdout).hexString
    }

    private func resolve(_ path: String, in folder: String) -> String {
        path.hasPrefix("/") ? path : folder + "/" + path
    }

    private func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }
}
