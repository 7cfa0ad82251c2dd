import ArgumentParser
import Foundation
import KilnVM
import Logging

/// `kiln image build|show|prune`: the guest image.
struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Build and inspect Kiln guest images.",
        subcommands: [Build.self, Show.self, Prune.self]
    )

    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build the guest image for a method manifest (cached by content).")

        @Option(help: "The kiln-agent binary, built with the Swift stdlib linked statically (`make guest-binaries`); by default the one of the Kiln checkout this kiln was built in.")
        var agent: String?

        @Option(help: "The method manifest (JSON).")
        var manifest = "examples/methods.json"

        @OptionGroup var settings: ConfigurationOptions

        @Option(help: "The image cache folder; vm.image_cache of the configuration by default.")
        var cache: String?

        @Option(help: "A concrete kernel package; default: what linux-image-amd64 depends on.")
        var kernelPackage: String?

        @Option(help: "Also point <cache>/NAME at the image (a symbolic link).")
        var link: String?

        @Flag(help: "gzip the initramfs (smaller, slower to boot under TCG).")
        var gzip = false

        @Option(help: "The Python method SDK put at /kiln/sdk/kiln_method.py; by default sdk/python/kiln_method.py of the Kiln checkout this kiln was built in.")
        var pythonSDK: String?

        @Option(help: "The largest root file system image (and unpacked OCI layers), MiB.")
        var maxRootfsMb = 4_096

        func validate() throws {
            guard (1...1_048_576).contains(maxRootfsMb) else { throw ValidationError("--max-rootfs-mb must be 1 to 1048576") }
        }

        func run() async throws {
            Kiln.bootstrapLogging(defaultLevel: .info)
            let logger = Logger(label: "kiln.image")
            let builder = GuestImageBuilder(cache: try cache ?? settings.load().vm.imageCache, logger: logger)
            let clock = ContinuousClock()
            let started = clock.now
            let image = try await builder.build(.init(
                agent: agent ?? ImageCommand.inCheckout(ImageCommand.agentInCheckout), manifestPath: manifest,
                kernelPackage: kernelPackage, gzip: gzip, pythonSDK: pythonSDK ?? ImageCommand.inCheckout(ImageCommand.pythonSDKInCheckout),
                maxRootFilesystemBytes: maxRootfsMb << 20))
            if let link { try builder.link(image, as: link) }
            print("image \(image.id)")
            print("  directory  \(image.directory)")
            print("  kernel     \(image.metadata.kernelPackage) \(image.metadata.kernelVersion)")
            print("  initramfs  \(image.metadata.initrd), \(image.metadata.initrdBytes / 1024) KiB")
            print("  methods    \(image.manifest.methods.keys.sorted().joined(separator: ", "))")
            for filesystem in image.rootFilesystems {
                print("  rootfs     \(filesystem.name): \(filesystem.device), erofs, \(filesystem.bytes / 1_048_576) MiB")
            }
            print("  took       \(started.duration(to: clock.now).text)")
        }
    }

    /// Where `make guest-binaries` puts the agent, relative to a Kiln checkout.
    static let agentInCheckout = ".build-guest/agent/release/kiln-agent"
    /// The Python method SDK, relative to a Kiln checkout.
    static let pythonSDKInCheckout = "sdk/python/kiln_method.py"

    /// `path` in the current folder's checkout, else in the checkout that built this `kiln` (its
    /// binary lives in `<checkout>/.build/...`), so that an image for a package of one's own
    /// builds from that package's folder.
    static func inCheckout(_ path: String) -> String {
        if FileManager.default.fileExists(atPath: path) { return path }
        var folder = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        while folder.path != "/" {
            let candidate = folder.appendingPathComponent(path).path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            folder.deleteLastPathComponent()
        }
        return path
    }

    struct Prune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove images and snapshot templates other than the kept ones (skipping any in use).")

        @OptionGroup var settings: ConfigurationOptions

        @Option(help: "The image cache folder; vm.image_cache of the configuration by default.")
        var cache: String?

        @Option(help: "Images to keep: ids or links in the cache.")
        var keep: [String] = ["current"]

        func run() throws {
            let removed = ImageCachePruner(cache: try cache ?? settings.load().vm.imageCache).prune(keep: keep)
            for path in removed { print("removed \(path)") }
            print("\(removed.count) removed")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Describe a built image.")

        @OptionGroup var settings: ConfigurationOptions

        @Argument(help: "The image folder; the worker's image (vm.image, else <vm.image_cache>/current) by default.")
        var directory: String?

        func run() throws {
            let image = try GuestImage.open(directory: try directory ?? settings.load().vm.imagePath)
            print("image \(image.id)")
            print("  kernel     \(image.metadata.kernelPackage) \(image.metadata.kernelVersion)")
            print("  initramfs  \(image.metadata.initrd), \(image.metadata.initrdBytes / 1024) KiB")
            for (name, method) in image.manifest.methods.sorted(by: { $0.key < $1.key }) {
                print("  \(name): \(image.manifest.guestEntry(for: name) ?? []) deadline \(method.deadlineMs) ms, \(method.mode.rawValue)\(method.warm ? " (warm)" : ""), \(method.lifecycle.rawValue)")
            }
        }
    }
}
