import Foundation

/// Tar archives written byte by byte (ustar headers), so that a test can make any entry it
/// likes, hostile ones included: `../` paths, links out of the root, whiteouts.
public struct TarWriter {
    public enum Entry {
        case file(String, contents: [UInt8], mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0)
        case directory(String, mode: UInt32 = 0o755)
        case symlink(String, target: String)
        case hardLink(String, target: String)
    }

    public private(set) var bytes: [UInt8] = []

    public init(_ entries: [Entry] = []) {
        for entry in entries { add(entry) }
    }

    public mutating func add(_ entry: Entry) {
        switch entry {
        case .file(let path, let contents, let mode, let uid, let gid):
            header(path, type: "0", size: contents.count, mode: mode, uid: uid, gid: gid)
            bytes += contents + [UInt8](repeating: 0, count: (512 - contents.count % 512) % 512)
        case .directory(let path, let mode):
            header(path, type: "5", size: 0, mode: mode)
        case .symlink(let path, let target):
            header(path, type: "2", size: 0, mode: 0o777, link: target)
        case .hardLink(let path, let target):
            header(path, type: "1", size: 0, mode: 0o644, link: target)
        }
    }

    /// The archive with its end (two zero blocks).
    public var archive: [UInt8] { bytes + [UInt8](repeating: 0, count: 1_024) }

    private mutating func header(_ path: String, type: Character, size: Int, mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0, link: String = "") {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, length: Int) {
            for (index, byte) in Array(text.utf8).prefix(length).enumerated() { block[offset + index] = byte }
        }
        func octal(_ value: Int, at offset: Int, length: Int) {
            put(String(String(value, radix: 8).suffix(length - 1)).leftPadded(to: length - 1), at: offset, length: length - 1)
        }
        put(path, at: 0, length: 100)
        octal(Int(mode), at: 100, length: 8)
        octal(Int(uid), at: 108, length: 8)
        octal(Int(gid), at: 116, length: 8)
        octal(size, at: 124, length: 12)
        octal(0, at: 136, length: 12)
        block[156] = type.asciiValue ?? 0x30
        put(link, at: 157, length: 100)
        put("ustar", at: 257, length: 6)
        put("00", at: 263, length: 2)
        for index in 148..<156 { block[index] = 0x20 }
        let sum = block.reduce(0) { $0 + Int($1) }
        put(String(String(sum, radix: 8)).leftPadded(to: 6), at: 148, length: 6)
        block[154] = 0
        block[155] = 0x20
        bytes += block
    }
}

private extension String {
    func leftPadded(to length: Int) -> String {
        count >= length ? self : String(repeating: "0", count: length - count) + self
    }
}

/// An OCI image archive (what `skopeo copy … oci-archive:` writes) or a `docker save` archive,
/// written from layers given as tar bytes, for tests of the image builder without a registry.
public enum OCIArchiveWriter {
    public struct Image {
        public var layers: [[UInt8]]
        public var architecture = "amd64"
        public var env: [String] = ["PATH=/usr/local/bin:/usr/bin:/bin"]
        public var workingDir = ""
        public var user = ""
        public var entrypoint: [String] = []
        public var cmd: [String] = []
        /// Compress the layers with gzip, as registries keep them.
        public var gzip = true

        public init(layers: [[UInt8]]) {
            self.layers = layers
        }
    }

    /// Writes `image` as an OCI layout archive at `path`; `corruptLayer` changes a byte of that
    /// layer after its digest is taken.
    public static func writeOCI(_ image: Image, to path: String, corruptLayer: Int? = nil) throws {
        var blobs: [(String, [UInt8])] = []
        var layerDescriptors: [[String: Any]] = []
        for (index, layer) in image.layers.enumerated() {
            var blob = image.gzip ? try gzip(layer) : layer
            let digest = try sha256(blob)
            if corruptLayer == index { blob[blob.count / 2] ^= 0xff }
            blobs.append((digest, blob))
            layerDescriptors.append([
                "mediaType": image.gzip ? "application/vnd.oci.image.layer.v1.tar+gzip" : "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:\(digest)", "size": blob.count,
            ])
        }
        let config = try JSONSerialization.data(withJSONObject: configDocument(image))
        let configDigest = try sha256(Array(config))
        blobs.append((configDigest, Array(config)))
        let manifest = try JSONSerialization.data(withJSONObject: [
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:\(configDigest)", "size": config.count],
            "layers": layerDescriptors,
        ] as [String: Any])
        let manifestDigest = try sha256(Array(manifest))
        blobs.append((manifestDigest, Array(manifest)))
        let index = try JSONSerialization.data(withJSONObject: [
            "schemaVersion": 2,
            "manifests": [["mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:\(manifestDigest)",
                           "size": manifest.count, "platform": ["architecture": image.architecture, "os": "linux"]]],
        ] as [String: Any])
        var archive = TarWriter([
            .file("oci-layout", contents: Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8)),
            .file("index.json", contents: Array(index)),
            .directory("blobs"), .directory("blobs/sha256"),
        ])
        for (digest, blob) in blobs { archive.add(.file("blobs/sha256/\(digest)", contents: blob)) }
        try Data(archive.archive).write(to: URL(fileURLWithPath: path))
    }

    /// Writes `image` as `docker save` does (layers uncompressed, a manifest.json).
    public static func writeDocker(_ image: Image, to path: String) throws {
        let config = try JSONSerialization.data(withJSONObject: configDocument(image))
        var archive = TarWriter([.file("config.json", contents: Array(config))])
        var layers: [String] = []
        for (index, layer) in image.layers.enumerated() {
            archive.add(.directory("layer\(index)"))
            archive.add(.file("layer\(index)/layer.tar", contents: layer))
            layers.append("layer\(index)/layer.tar")
        }
        let manifest = try JSONSerialization.data(withJSONObject: [["Config": "config.json", "RepoTags": ["test:latest"], "Layers": layers]])
        archive.add(.file("manifest.json", contents: Array(manifest)))
        try Data(archive.archive).write(to: URL(fileURLWithPath: path))
    }

    private static func configDocument(_ image: Image) -> [String: Any] {
        var config: [String: Any] = ["Env": image.env]
        if !image.workingDir.isEmpty { config["WorkingDir"] = image.workingDir }
        if !image.user.isEmpty { config["User"] = image.user }
        if !image.entrypoint.isEmpty { config["Entrypoint"] = image.entrypoint }
        if !image.cmd.isEmpty { config["Cmd"] = image.cmd }
        return ["architecture": image.architecture, "os": "linux", "config": config,
                "rootfs": ["type": "layers", "diff_ids": [String]()]]
    }

    private static func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
        try filter("/bin/gzip", ["-c", "-n"], bytes)
    }

    private static func sha256(_ bytes: [UInt8]) throws -> String {
        let output = try filter("/usr/bin/sha256sum", [], bytes)
        return String(decoding: output.prefix(64), as: UTF8.self)
    }

    /// `bytes` through a command's stdin and stdout (through files: no pipe to fill up).
    private static func filter(_ tool: String, _ arguments: [String], _ bytes: [UInt8]) throws -> [UInt8] {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-oci-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let input = folder.appendingPathComponent("in"), output = folder.appendingPathComponent("out")
        try Data(bytes).write(to: input)
        let (status, text) = try runToCompletion("/bin/sh", ["-c", #""$0" "$@" < "$IN" > "$OUT""#, tool] + arguments,
                                                 environment: ["IN": input.path, "OUT": output.path, "PATH": "/usr/bin:/bin"])
        guard status == 0 else { throw HelperFailure("\(tool) failed: \(text)") }
        return [UInt8](try Data(contentsOf: output))
    }
}
