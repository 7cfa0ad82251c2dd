import Foundation
import KilnTestSupport
import Logging
import Testing

@testable import KilnVM

/// Unpacking container images without a registry: OCI layouts and docker save archives built
/// here, byte by byte, and every kind of bad input the issue names.
@Suite("OCI images")
struct OCIImageTests {
    let folder: URL = {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-oci-test-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }()

    static let logger = Logger(label: "kiln-oci-tests") { _ in SwiftLogNoOpLogHandler() }

    /// Two layers: the second changes a file, deletes one, replaces a folder's content
    /// (opaque) and writes through the usrmerge link `bin -> usr/bin`.
    static let layers: [[UInt8]] = [
        TarWriter([
            .directory("etc"), .file("etc/motd", contents: Array("one\n".utf8)),
            .directory("app"), .file("app/old.txt", contents: [1]), .file("app/keep.txt", contents: [2], mode: 0o600, uid: 1000, gid: 1000),
            .directory("cache"), .file("cache/stale", contents: [3]),
            .directory("usr"), .directory("usr/bin"), .symlink("bin", target: "usr/bin"),
            .file("usr/bin/tool", contents: Array("#!/bin/sh\n".utf8), mode: 0o755),
            .symlink("etc/localtime", target: "/usr/share/zoneinfo/UTC"),
        ]).archive,
        TarWriter([
            .file("etc/motd", contents: Array("two\n".utf8)),
            .file("app/.wh.old.txt", contents: []), .file("app/new.txt", contents: [4]),
            .file("cache/.wh..wh..opq", contents: []), .file("cache/fresh", contents: [5]),
            .file("bin/added", contents: [6], mode: 0o755),
            .hardLink("app/keep-link.txt", target: "app/keep.txt"),
        ]).archive,
    ]

    func unpack(_ archive: String, maxBytes: Int = 1 << 30) async throws(VMError) -> (String, RootFilesystemConfig) {
        let tree = folder.appendingPathComponent("tree-\(UUID().uuidString.prefix(4))").path
        let scratch = folder.appendingPathComponent("scratch-\(UUID().uuidString.prefix(4))").path
        try makeDirectories(scratch)
        let config = try await OCIImageUnpacker(archive: archive, scratch: scratch, maxBytes: maxBytes, logger: Self.logger).unpack(into: tree)
        return (tree, config)
    }

    func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))
    }

    func expectUnpackedTree(_ tree: String) throws {
        #expect(read(tree + "/etc/motd") == "two\n", "the later layer wins")
        #expect(!FileManager.default.fileExists(atPath: tree + "/app/old.txt"), "whiteout")
        #expect(FileManager.default.fileExists(atPath: tree + "/app/keep.txt"))
        #expect(FileManager.default.fileExists(atPath: tree + "/app/new.txt"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: tree + "/cache") == ["fresh"], "opaque whiteout")
        #expect(FileManager.default.fileExists(atPath: tree + "/usr/bin/added"), "written through bin -> usr/bin")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: tree + "/etc/localtime") == "/usr/share/zoneinfo/UTC")
        var keep = stat(), link = stat()
        #expect(stat(tree + "/app/keep.txt", &keep) == 0 && stat(tree + "/app/keep-link.txt", &link) == 0)
        #expect(keep.st_ino == link.st_ino, "a hard link")
        #expect(keep.st_uid == 1000 && keep.st_mode & 0o777 == 0o600, "owner and mode")
    }

    @Test func unpacksAnOCIArchiveLayerByLayer() async throws {
        var image = OCIArchiveWriter.Image(layers: Self.layers)
        (image.workingDir, image.user, image.entrypoint, image.cmd) = ("/app", "1000:1000", ["/usr/bin/tool"], ["--flag"])
        image.env = ["PATH=/usr/bin:/bin", "GREETING=hi"]
        let archive = folder.appendingPathComponent("image.oci.tar").path
        try OCIArchiveWriter.writeOCI(image, to: archive)
        let (tree, config) = try await unpack(archive)
        try expectUnpackedTree(tree)
        #expect(config == RootFilesystemConfig(env: ["PATH=/usr/bin:/bin", "GREETING=hi"], workingDir: "/app", user: "1000:1000",
                                               entry: ["/usr/bin/tool", "--flag"]))
    }

    @Test func unpacksADockerSaveArchive() async throws {
        var image = OCIArchiveWriter.Image(layers: Self.layers)
        image.cmd = ["sh"]
        let archive = folder.appendingPathComponent("image.docker.tar").path
        try OCIArchiveWriter.writeDocker(image, to: archive)
        let (tree, config) = try await unpack(archive)
        try expectUnpackedTree(tree)
        #expect(config.entry == ["sh"])
        #expect(config.user == nil, "no user: the method user")
    }

    @Test func aNamedUserIsLookedUpInTheImageAndRootIsNeverTaken() throws {
        let tree = folder.appendingPathComponent("users").path
        try FileManager.default.createDirectory(atPath: tree + "/etc", withIntermediateDirectories: true)
        try "root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/app:/bin/sh\n".write(toFile: tree + "/etc/passwd", atomically: true, encoding: .utf8)
        try "root:x:0:\nstaff:x:50:\n".write(toFile: tree + "/etc/group", atomically: true, encoding: .utf8)
        #expect(OCIImageUnpacker.numericUser("app", tree: tree) == "1001:1002")
        #expect(OCIImageUnpacker.numericUser("app:staff", tree: tree) == "1001:50")
        #expect(OCIImageUnpacker.numericUser("7:8", tree: tree) == "7:8")
        #expect(OCIImageUnpacker.numericUser("root", tree: tree) == nil)
        #expect(OCIImageUnpacker.numericUser("0", tree: tree) == nil)
        #expect(OCIImageUnpacker.numericUser("nobody-here", tree: tree) == nil)
    }

    /// Each bad archive fails with a reason that names what is wrong.
    @Test(arguments: [
        ("a layer with ../", [TarWriter([.file("../evil", contents: [1])]).archive], "has '..' in its path"),
        ("a write through an absolute link", [TarWriter([.symlink("escape", target: "/"), .file("escape/etc/passwd", contents: [1])]).archive],
         "goes through the symbolic link /escape → /"),
        ("a link that climbs out", [TarWriter([.symlink("up", target: "../../.."), .file("up/x", contents: [1])]).archive], "climbs out of the root"),
        ("a whiteout of nothing", [TarWriter([.directory("etc")]).archive, TarWriter([.file("etc/.wh.missing", contents: [])]).archive],
         "deletes /etc/missing, which no layer below made"),
        ("a hard link to outside", [TarWriter([.hardLink("passwd", target: "../../etc/passwd")]).archive], "has '..' in its path"),
        ("a layer that is not a tar", [Array(repeating: 0x41, count: 2_000)], "is not a tar archive, or is corrupt"),
    ] as [(String, [[UInt8]], String)])
    func refusesAHostileLayer(what: String, layers: [[UInt8]], reason: String) async throws {
        let archive = folder.appendingPathComponent("bad.oci.tar").path
        var image = OCIArchiveWriter.Image(layers: layers)
        image.gzip = false
        try OCIArchiveWriter.writeOCI(image, to: archive)
        await expectFailure(archive, reason, what)
        #expect(!FileManager.default.fileExists(atPath: folder.deletingLastPathComponent().appendingPathComponent("evil").path))
    }

    @Test func refusesACorruptLayerAnotherArchitectureAGarbageFileAndTooLargeAnImage() async throws {
        let corrupt = folder.appendingPathComponent("corrupt.oci.tar").path
        try OCIArchiveWriter.writeOCI(OCIArchiveWriter.Image(layers: Self.layers), to: corrupt, corruptLayer: 1)
        await expectFailure(corrupt, "layer 2 of 2 (blobs/sha256/", "a corrupt layer")
        await expectFailure(corrupt, "is corrupt: its content does not match its digest", "a corrupt layer")

        var arm = OCIArchiveWriter.Image(layers: Self.layers)
        arm.architecture = "arm64"
        let armPath = folder.appendingPathComponent("arm.oci.tar").path
        try OCIArchiveWriter.writeOCI(arm, to: armPath)
        await expectFailure(armPath, "the image is for linux/arm64; Kiln's guests are linux/amd64", "another architecture")

        let garbage = folder.appendingPathComponent("garbage.tar").path
        try Data(repeating: 7, count: 4_096).write(to: URL(fileURLWithPath: garbage))
        await expectFailure(garbage, "is not a tar archive, or is corrupt", "garbage")
        await expectFailure(folder.appendingPathComponent("missing.tar").path, "does not exist", "a missing archive")

        let empty = folder.appendingPathComponent("empty.tar").path
        try Data(TarWriter([.file("readme", contents: [1])]).archive).write(to: URL(fileURLWithPath: empty))
        await expectFailure(empty, "neither an OCI image archive (no index.json) nor a docker save archive", "no manifest")

        let large = folder.appendingPathComponent("large.oci.tar").path
        try OCIArchiveWriter.writeOCI(OCIArchiveWriter.Image(layers: [TarWriter([.file("big", contents: [UInt8](repeating: 1, count: 4_096))]).archive]),
                                      to: large)
        do {
            _ = try await unpack(large, maxBytes: 1_000)
            Issue.record("an image over the bound was unpacked")
        } catch {
            #expect("\(error)".contains("over 0 MiB") || "\(error)".contains("--max-rootfs-mb"), "\(error)")
        }
    }

    func expectFailure(_ archive: String, _ reason: String, _ what: String) async {
        do {
            _ = try await unpack(archive)
            Issue.record("\(what) was unpacked")
        } catch {
            #expect("\(error)".contains(reason), "\(what): \(error)")
        }
    }
}

/// What a root file system's listing says, and how entries resolve in it.
@Suite("Root file system index")
struct RootFilesystemIndexTests {
    static let listing: [UInt8] = {
        var bytes: [UInt8] = []
        for (head, target) in [
            ("d 755 .", ""), ("d 755 ./usr", ""), ("d 755 ./usr/bin", ""), ("l 777 ./bin", "usr/bin"),
            ("f 755 ./usr/bin/python3.11", ""), ("l 777 ./usr/bin/python3", "python3.11"), ("f 644 ./usr/bin/notes", ""),
            ("l 777 ./usr/bin/loop", "loop"), ("l 777 ./usr/bin/abs", "/usr/bin/python3.11"), ("f 755 ./usr/bin/with space", ""),
        ] {
            bytes += Array(head.utf8) + [0] + Array(target.utf8) + [0]
        }
        return bytes
    }()

    @Test func findsProgramsThroughLinksInsideTheRoot() {
        let index = RootFilesystemIndex(listing: Self.listing)
        #expect(index.entries["/usr/bin/python3"] == .symlink(target: "python3.11"))
        #expect(index.resolve("/bin/python3") == "/usr/bin/python3.11")
        #expect(index.locate("python3") == "/usr/bin/python3")
        #expect(index.locate("/bin/python3") == "/bin/python3")
        #expect(index.locate("abs") == "/usr/bin/abs", "an absolute link resolves inside the root")
        #expect(index.locate("with space") == "/usr/bin/with space")
        #expect(index.locate("notes") == nil, "not executable")
        #expect(index.locate("loop") == nil, "a loop")
        #expect(index.locate("missing") == nil)
        #expect(index.locate("usr/bin/python3") == nil, "a relative path is not a program name")
        #expect(index.locate("python3", searchPath: ["/opt"]) == nil)
    }
}

/// Entries checked and resolved against their root file systems at build time.
@Suite("Entries on root file systems")
struct RootFilesystemEntryTests {
    static func built(_ name: String, entry: [String] = [], path: String = "/usr/bin:/bin") -> RootFilesystemBuilder.Built {
        var listing: [UInt8] = []
        for (head, target) in [("d 755 .", ""), ("d 755 ./usr", ""), ("d 755 ./usr/bin", ""), ("f 755 ./usr/bin/python3", ""), ("l 777 ./bin", "usr/bin")] {
            listing += Array(head.utf8) + [0] + Array(target.utf8) + [0]
        }
        return RootFilesystemBuilder.Built(name: name, key: "k", image: "/dev/null", bytes: 0, index: RootFilesystemIndex(listing: listing),
                                           config: RootFilesystemConfig(env: ["PATH=\(path)"], entry: entry))
    }

    func manifest(_ methods: [String: MethodManifest.Method]) -> MethodManifest {
        MethodManifest(programs: ["tool": "tool"], methods: methods,
                       rootFilesystems: ["py": .init(source: .directory("py")), "img": .init(source: .oci(archive: "img.tar"))], rootfs: "py")
    }

    @Test func resolvesNamesOnThePathAndTakesTheImagesEntry() throws {
        let methods = try GuestImageBuilder.resolveEntries(manifest([
            "a": .init(entry: ["python3", "-c", "1"]), "b": .init(entry: ["tool"]), "c": .init(entry: [], rootfs: "img"),
            "d": .init(entry: ["/bin/python3"]),
        ]), rootFilesystems: [Self.built("py"), Self.built("img", entry: ["python3", "app.py"])], path: "m.json")
        #expect(methods["a"]?.entry == ["/usr/bin/python3", "-c", "1"])
        #expect(methods["a"]?.rootfs == "py")
        #expect(methods["b"]?.entry == ["tool"], "the image's programs are at /kiln/bin on every root")
        #expect(methods["c"]?.entry == ["/usr/bin/python3", "app.py"])
        #expect(methods["d"]?.entry == ["/bin/python3"])
    }

    @Test func anEntryNotInItsRootIsAnErrorNamingTheMethod() {
        #expect(throws: VMError.manifestInvalid(path: "m.json", reason: "methods.a.entry: node is not an executable file in root file system py (searched /usr/bin:/bin)")) {
            try GuestImageBuilder.resolveEntries(manifest(["a": .init(entry: ["node"])]), rootFilesystems: [Self.built("py")], path: "m.json")
        }
        #expect(throws: VMError.manifestInvalid(path: "m.json", reason: "methods.c has no entry and the image of root file system img sets no Entrypoint or Cmd")) {
            try GuestImageBuilder.resolveEntries(manifest(["c": .init(entry: [], rootfs: "img")]), rootFilesystems: [Self.built("img")], path: "m.json")
        }
    }
}
