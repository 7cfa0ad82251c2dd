import Foundation
import KilnTestSupport
import KilnVM
import KilnWire
import Logging
import Testing

/// Methods on root file systems of their own, with real images, on both backends: an image built
/// here from two host folders (busybox and a few files each) and an OCI image archive made from a
/// third, packed as erofs, mounted read-only in the guest under a writable layer that the reset
/// wipes.
@Suite("Root file systems", .serialized)
struct RootFilesystemTests {
    /// A folder with busybox as `/bin/sh`, `/etc/motd` saying `motd`, and a world-writable
    /// `/var/data`.
    static func makeRoot(_ folder: URL, motd: String) throws {
        let manager = FileManager.default
        for path in ["bin", "etc", "var/data", "proc", "dev", "tmp"] {
            try manager.createDirectory(at: folder.appendingPathComponent(path), withIntermediateDirectories: true)
        }
        try manager.copyItem(atPath: "/bin/busybox", toPath: folder.appendingPathComponent("bin/busybox").path)
        for applet in ["sh", "cat", "ls", "echo", "id", "pwd", "touch"] {
            try manager.createSymbolicLink(atPath: folder.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        try "\(motd)\n".write(to: folder.appendingPathComponent("etc/motd"), atomically: true, encoding: .utf8)
        chmod(folder.appendingPathComponent("var/data").path, 0o1777)
    }

    /// The image for two methods on two root file systems, built once per test process in a
    /// temporary cache (the kernel package comes from the checkout's cache).
    static let building = Task<GuestImage, any Error> {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-rootfs-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("cache"), withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: FileManager.default.temporaryDirectory.appendingPathComponent("kiln-rootfs-\(getpid())").path) }
        try makeRoot(folder.appendingPathComponent("red"), motd: "red")
        try makeRoot(folder.appendingPathComponent("blue"), motd: "blue")
        // An OCI image archive from a folder (its one layer by tar), as a registry would hold it.
        let app = folder.appendingPathComponent("app")
        try makeRoot(app, motd: "oci")
        try FileManager.default.createDirectory(at: app.appendingPathComponent("srv"), withIntermediateDirectories: true)
        let layer = folder.appendingPathComponent("layer.tar").path
        let (status, output) = try runToCompletion("/bin/tar", ["--numeric-owner", "-C", app.path, "-cf", layer, "."])
        guard status == 0 else { throw HelperFailure("tar: \(output)") }
        var image = OCIArchiveWriter.Image(layers: [[UInt8](try Data(contentsOf: URL(fileURLWithPath: layer)))])
        image.env = ["PATH=/bin", "GREETING=hello"]
        (image.workingDir, image.user) = ("/srv", "1000:1000")
        image.entrypoint = ["/bin/sh", "-c", #"echo "$GREETING from $(pwd) as $(id -u):$(id -g), $(cat /etc/motd)""#]
        try OCIArchiveWriter.writeOCI(image, to: folder.appendingPathComponent("app.oci.tar").path)
        try FileManager.default.createSymbolicLink(
            atPath: folder.appendingPathComponent("cache/kernels").path,
            withDestinationPath: Fixture.repositoryRoot + "/.local/images/kernels")
        try """
        {"version": 1, "programs": {"greet": "greet.sh"},
         "root_filesystems": {"red": {"directory": "red", "copy": {"/opt/note.txt": "note.txt"}}, "blue": {"directory": "blue"},
                              "app": {"oci": "app.oci.tar"}},
         "rootfs": "red",
         "methods": {"on-red": {"entry": ["sh", "-c", "cat /etc/motd"]},
                     "on-blue": {"entry": ["/bin/sh", "-c", "cat /etc/motd"], "rootfs": "blue"},
                     "greet": {"entry": ["greet", "from red"]},
                     "from-oci": {"rootfs": "app"}}}
        """.write(to: folder.appendingPathComponent("methods.json"), atomically: true, encoding: .utf8)
        try "a note\n".write(to: folder.appendingPathComponent("note.txt"), atomically: true, encoding: .utf8)
        // A program of the image's own, on the root file system's shell.
        try "#!/bin/sh\necho \"greetings $1: $(cat /etc/motd)\"\n".write(to: folder.appendingPathComponent("greet.sh"), atomically: true, encoding: .utf8)
        chmod(folder.appendingPathComponent("greet.sh").path, 0o755)
        return try await GuestImageBuilder(cache: folder.appendingPathComponent("cache").path, logger: Fixture.logger).build(.init(
            agent: Fixture.repositoryRoot + "/.build-guest/agent/release/kiln-agent",
            manifestPath: folder.appendingPathComponent("methods.json").path))
    }

    /// The drivers of that image, made once.
    static let drivers = Task<(QEMUDriver, ProcessSandboxDriver), any Error> {
        let image = try await building.value
        return (try QEMUDriver(image: image, logger: Fixture.logger), try ProcessSandboxDriver(image: image, logger: Fixture.logger))
    }

    func withRootedVM(_ backend: Backend, _ body: (any MicroVM, GuestImage) async throws -> Void) async throws {
        let image = try await Self.building.value
        let (qemu, process) = try await Self.drivers.value
        let vm: any MicroVM = switch backend {
        case .qemu: try await qemu.restore(.small)
        case .process: try await process.start(.small)
        }
        do {
            try await body(vm, image)
            await vm.destroy()
        } catch {
            await vm.destroy()
            throw error
        }
    }

    /// A call of `method` with `script` as its shell command (its entry's own command replaced).
    func call(_ method: String, _ script: String, in image: GuestImage) throws -> GuestFrame.ExecRequest {
        let entry = try #require(image.manifest.guestEntry(for: method))
        return GuestFrame.ExecRequest(id: "\(method)-\(UUID().uuidString.prefix(6))", method: method, entry: [entry[0], "-c", script],
                                      payload: [], deadlineMs: Fixture.generousDeadlineMs)
    }

    func text(_ result: GuestFrame.ExecResult) -> String {
        String(decoding: result.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func theImageRecordsItsRootFilesystemsAndResolvedEntries() async throws {
        let image = try await Self.building.value
        #expect(image.rootFilesystems.map(\.name) == ["app", "blue", "red"])
        #expect(image.rootFilesystems.map(\.device) == ["/dev/vda", "/dev/vdb", "/dev/vdc"])
        #expect(image.manifest.guestEntry(for: "from-oci")?.first == "/bin/sh", "the image's Entrypoint")
        #expect(image.manifest.guestEntry(for: "on-red") == ["/bin/sh", "-c", "cat /etc/motd"], "found on the root's PATH")
        #expect(image.manifest.methods["on-red"]?.rootfs == "red", "the image-wide rootfs, made explicit")
        for filesystem in image.rootFilesystems {
            let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: image.path(of: filesystem))).read(upToCount: 1028) ?? Data()
            #expect(Array(head.suffix(4)) == [0xe2, 0xe1, 0xf5, 0xe0], "erofs magic")
        }
    }

    @Test(arguments: Backend.allCases)
    func eachMethodRunsOnItsOwnRootAndSeesNoOther(backend: Backend) async throws {
        try await withRootedVM(backend) { vm, image in
            let red = try await vm.exec(try call("on-red", "cat /etc/motd /opt/note.txt; pwd; id -u; ls /kiln", in: image))
            #expect(red.status == .ok, "\(red.stderr)")
            #expect(text(red) == "red\na note\n/\n65534\nbin", "\(text(red))")
            // The image's programs are there, read-only, and run on the root's own files.
            let greet = try await vm.exec(GuestFrame.ExecRequest(
                id: "greet", method: "greet", entry: try #require(image.manifest.guestEntry(for: "greet")), payload: [],
                deadlineMs: Fixture.generousDeadlineMs))
            #expect(text(greet) == "greetings from red: red", "\(greet.stderr)")
            let blue = try await vm.exec(try call("on-blue", "cat /etc/motd; ls /opt 2>&1; ls /kiln/rootfs 2>&1; true", in: image))
            #expect(blue.status == .ok, "\(blue.stderr)")
            let lines = text(blue).split(separator: "\n")
            #expect(lines.first == "blue")
            #expect(lines.dropFirst().allSatisfy { $0.contains("No such file") }, "blue sees red's files or the mounts: \(lines)")
        }
    }

    /// A method with no entry runs the OCI image's Entrypoint, with its Env, in its WorkingDir,
    /// as its User.
    @Test(arguments: Backend.allCases)
    func anOCIImageRunsAsItsConfigSays(backend: Backend) async throws {
        try await withRootedVM(backend) { vm, image in
            let result = try await vm.exec(GuestFrame.ExecRequest(
                id: "oci", method: "from-oci", entry: try #require(image.manifest.guestEntry(for: "from-oci")), payload: [],
                deadlineMs: Fixture.generousDeadlineMs))
            #expect(result.status == .ok, "\(result.stderr)")
            #expect(text(result) == "hello from /srv as 1000:1000, oci", "\(text(result))")
        }
    }

    @Test(arguments: Backend.allCases)
    func writesAreGoneAfterTheResetAndTheImageIsReadOnly(backend: Backend) async throws {
        try await withRootedVM(backend) { vm, image in
            let wrote = try await vm.exec(try call(
                "on-red", "echo kept > /var/data/file && cat /var/data/file; echo x > /etc/motd 2>/dev/null || echo refused", in: image))
            #expect(text(wrote) == "kept\nrefused", "\(text(wrote)) \(wrote.stderr)")
            try await vm.reset()
            let after = try await vm.exec(try call("on-red", "ls -A /var/data; cat /etc/motd", in: image))
            #expect(text(after) == "red", "the write outlived the reset: \(text(after))")
        }
    }
}
