import Foundation
import Glibc
import Logging

/// Unpacks a container image from an archive file — an OCI image layout (`skopeo copy …
/// oci-archive:`, `buildah push`, `podman save --format oci-archive`) or `docker save`'s format
/// (`manifest.json` and layer tars) — into a root file system folder, without a registry or a
/// container runtime: the layers in order (gzip, zstd or plain; each checked against its
/// digest), whiteouts honoured (see ``LayerApplier``), and the image config's `Env`,
/// `WorkingDir`, `User`, `Entrypoint` and `Cmd` returned. The image must be for linux/amd64.
struct OCIImageUnpacker {
    let archive: String
    /// A folder of the unpacker's own for the archive's blobs.
    let scratch: String
    /// The most bytes the unpacked layers may hold.
    var maxBytes = 4 << 30
    let logger: Logger

    init(archive: String, scratch: String, maxBytes: Int = 4 << 30, logger: Logger) {
        self.archive = archive
        self.scratch = scratch
        self.maxBytes = maxBytes
        self.logger = logger
    }

    /// What the archive's manifest names.
    struct Layout: Equatable {
        var config: String
        var layers: [(path: String, digest: String?)]

        static func == (lhs: Layout, rhs: Layout) -> Bool {
            lhs.config == rhs.config && lhs.layers.map(\.path) == rhs.layers.map(\.path) && lhs.layers.map(\.digest) == rhs.layers.map(\.digest)
        }
    }

    /// Unpacks the image into `tree` (made here) and returns its config.
    func unpack(into tree: String) async throws(VMError) -> RootFilesystemConfig {
        let step = "unpacking the OCI image \(archive)"
        var info = stat()
        guard stat(archive, &info) == 0 else { throw .imageBuildFailed(step: step, reason: "\(archive) does not exist") }
        let blobs: String
        if info.st_mode & S_IFMT == S_IFDIR {
            blobs = archive  // an OCI layout folder, as `skopeo copy … oci:DIR` leaves it
        } else {
            blobs = scratch + "/archive"
            try makeDirectories(blobs)
            var outer = LayerApplier(root: blobs, maxBytes: Int.max)
            do {
                try outer.apply(layer: archive, name: archive)
            } catch {
                throw .imageBuildFailed(step: step, reason: "\(error.description) (is it an image archive?)")
            }
        }
        let layout = try Self.layout(in: blobs, step: step)
        let config = try Self.json(at: blobs + "/" + layout.config, step: step, what: "the image config")
        try Self.requireAmd64(config, step: step)

        try makeDirectories(tree)
        var applier = LayerApplier(root: tree, maxBytes: maxBytes)
        for (number, layer) in layout.layers.enumerated() {
            let name = "layer \(number + 1) of \(layout.layers.count) (\(layer.path))"
            let path = blobs + "/" + layer.path
            guard access(path, R_OK) == 0 else { throw .imageBuildFailed(step: step, reason: "\(name) is not in the archive") }
            if let digest = layer.digest { try await Self.verify(path, digest: digest, name: name, scratch: scratch, step: step) }
            let plain = try await decompressed(path, name: name, step: step)
            do {
                try applier.apply(layer: plain, name: name)
            } catch {
                throw .imageBuildFailed(step: step, reason: error.description)
            }
            if plain != path { unlink(plain) }
        }
        logger.info("image: unpacked \(layout.layers.count) layers, \(applier.bytesWritten / 1_048_576) MiB")
        return Self.runConfig(config, tree: tree)
    }

    /// The config and layers an OCI layout (`index.json`) or a docker archive (`manifest.json`)
    /// names, as paths inside `folder`.
    static func layout(in folder: String, step: String) throws(VMError) -> Layout {
        if access(folder + "/index.json", R_OK) == 0 {
            var document = try json(at: folder + "/index.json", step: step, what: "index.json")
            // An index may name another index (a multi-platform image): follow it to linux/amd64.
            for _ in 0..<4 {
                guard let manifests = document["manifests"] as? [[String: Any]], !manifests.isEmpty else {
                    throw .imageBuildFailed(step: step, reason: "index.json names no manifest")
                }
                let chosen = manifests.first { entry in
                    guard let platform = entry["platform"] as? [String: Any] else { return true }
                    return platform["architecture"] as? String == "amd64" && platform["os"] as? String == "linux"
                }
                guard let chosen, let digest = chosen["digest"] as? String else {
                    let platforms = manifests.compactMap { ($0["platform"] as? [String: Any]).map { "\($0["os"] ?? "?")/\($0["architecture"] ?? "?")" } }
                    throw .imageBuildFailed(step: step, reason: "the image is for \(platforms.joined(separator: ", ")); Kiln's guests are linux/amd64")
                }
                document = try json(at: folder + "/" + blobPath(digest, step: step), step: step, what: "manifest \(digest)")
                if document["layers"] != nil { break }
            }
            guard let configDigest = (document["config"] as? [String: Any])?["digest"] as? String,
                  let layers = document["layers"] as? [[String: Any]] else {
                throw .imageBuildFailed(step: step, reason: "the image manifest names no config or no layers")
            }
            var paths: [(String, String?)] = []
            for layer in layers {
                guard let digest = layer["digest"] as? String else { throw .imageBuildFailed(step: step, reason: "a layer has no digest") }
                paths.append((try blobPath(digest, step: step), digest))
            }
            return Layout(config: try blobPath(configDigest, step: step), layers: paths)
        }
        if access(folder + "/manifest.json", R_OK) == 0 {
            guard let data = FileManager.default.contents(atPath: folder + "/manifest.json"),
                  let images = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]], let image = images.first,
                  let config = image["Config"] as? String, let layers = image["Layers"] as? [String] else {
                throw .imageBuildFailed(step: step, reason: "manifest.json is not a docker save manifest ([{Config, Layers}])")
            }
            for path in [config] + layers where path.hasPrefix("/") || path.split(separator: "/").contains("..") {
                throw .imageBuildFailed(step: step, reason: "manifest.json names \(path.prefix(200)), outside the archive")
            }
            return Layout(config: config, layers: layers.map { path in
                // Newer docker archives keep layers as blobs named by their digest.
                let parts = path.split(separator: "/")
                let digest = parts.count == 3 && parts[0] == "blobs" ? "\(parts[1]):\(parts[2])" : nil
                return (path, digest)
            })
        }
        throw .imageBuildFailed(step: step, reason: "it is neither an OCI image archive (no index.json) nor a docker save archive (no manifest.json)")
    }

    /// `blobs/sha256/<hex>` for `sha256:<hex>`.
    static func blobPath(_ digest: String, step: String) throws(VMError) -> String {
        let parts = digest.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, ["sha256", "sha512"].contains(parts[0]),
              parts[1].allSatisfy({ $0.isHexDigit && !$0.isUppercase }), [64, 128].contains(parts[1].count) else {
            throw .imageBuildFailed(step: step, reason: "'\(digest.prefix(100))' is not a digest (sha256:<64 hex digits>)")
        }
        return "blobs/\(parts[0])/\(parts[1])"
    }

    static func json(at path: String, step: String, what: String) throws(VMError) -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .imageBuildFailed(step: step, reason: "\(what) is not in the archive")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .imageBuildFailed(step: step, reason: "\(what) is not a JSON object")
        }
        return object
    }

    static func requireAmd64(_ config: [String: Any], step: String) throws(VMError) {
        let architecture = config["architecture"] as? String ?? "amd64"
        let os = config["os"] as? String ?? "linux"
        guard architecture == "amd64", os == "linux" else {
            throw .imageBuildFailed(step: step, reason: "the image is for \(os)/\(architecture); Kiln's guests are linux/amd64")
        }
    }

    /// Checks a blob against its digest.
    static func verify(_ path: String, digest: String, name: String, scratch: String, step: String) async throws(VMError) {
        let parts = digest.split(separator: ":", maxSplits: 1)
        guard parts.count == 2 else { return }
        let tool = parts[0] == "sha512" ? "sha512sum" : "sha256sum"
        let output = try await HostCommand(tool, ["--", path], timeout: .seconds(600)).run(scratch: scratch)
        guard output.stdoutText.split(separator: " ").first.map(String.init) == String(parts[1]) else {
            throw .imageBuildFailed(step: step, reason: "\(name) is corrupt: its content does not match its digest \(digest.prefix(19))…")
        }
    }

    /// The layer as a plain tar: itself, or decompressed (gzip, zstd) next to it.
    private func decompressed(_ path: String, name: String, step: String) async throws(VMError) -> String {
        guard let head = readPrefix(path, count: 4) else { throw .imageBuildFailed(step: step, reason: "cannot read \(name)") }
        let tool: String
        if head.starts(with: [0x1f, 0x8b]) {
            tool = "gzip"
        } else if head == [0x28, 0xb5, 0x2f, 0xfd] {
            tool = "zstd"
            guard HostCommand.resolve("zstd") != nil else {
                throw .imageBuildFailed(step: step, reason: "\(name) is zstd-compressed: install zstd")
            }
        } else {
            return path
        }
        let plain = scratch + "/layer-\(UInt32.random(in: 0...UInt32.max)).tar"
        do {
            try await HostCommand(tool, ["-dc", "--", path], timeout: .seconds(1_800), stdoutPath: plain).run(scratch: scratch)
        } catch {
            unlink(plain)
            throw .imageBuildFailed(step: step, reason: "\(name) does not decompress (\(tool)): \(error)")
        }
        return plain
    }

    /// The environment, working folder, user and entry of the image config's `config`.
    static func runConfig(_ document: [String: Any], tree: String) -> RootFilesystemConfig {
        let config = document["config"] as? [String: Any] ?? [:]
        var result = RootFilesystemConfig()
        if let env = config["Env"] as? [String], !env.isEmpty { result.env = env }
        if let folder = config["WorkingDir"] as? String, folder.hasPrefix("/") { result.workingDir = folder }
        result.entry = (config["Entrypoint"] as? [String] ?? []) + (config["Cmd"] as? [String] ?? [])
        if let user = config["User"] as? String, !user.isEmpty { result.user = numericUser(user, tree: tree) }
        return result
    }

    /// `uid:gid` for an image's `User` (`name`, `uid`, `name:group`, `uid:gid`), looked up in
    /// the image's own `/etc/passwd` and `/etc/group`; nil for root or a name it lacks (the
    /// method then runs as nobody: never as root).
    static func numericUser(_ user: String, tree: String) -> String? {
        let parts = user.split(separator: ":", maxSplits: 1).map(String.init)
        func lookUp(_ name: String, in file: String, field: Int) -> (UInt32, UInt32?)? {
            if let number = UInt32(name) { return (number, nil) }
            let text = String(decoding: readFile(tree + file) ?? [], as: UTF8.self)
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: ":", omittingEmptySubsequences: false)
                if fields.count > 3, fields[0] == name, let id = UInt32(fields[2]) {
                    return (id, field == 0 ? UInt32(fields[3]) : nil)
                }
            }
            return nil
        }
        guard let (uid, primaryGroup) = lookUp(parts[0], in: "/etc/passwd", field: 0), uid != 0 else { return nil }
        let gid = parts.count > 1 ? lookUp(parts[1], in: "/etc/group", field: 1)?.0 : primaryGroup
        return "\(uid):\(gid ?? uid)"
    }
}
