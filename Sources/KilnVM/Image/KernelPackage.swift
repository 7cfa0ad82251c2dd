import Foundation
import Glibc
import Logging

/// The guest kernel, taken from Debian's package: `vmlinux` (uncompressed, booted directly by
/// PVH) and the virtio modules the initramfs loads. Kept under `<cache>/kernels/<package>/` so
/// that it is downloaded once.
public struct KernelPackage: Sendable {
    /// The modules the initramfs loads, in `insmod` order (the balloon lets a VM's memory
    /// grow at run time; it idles where QEMU has no balloon device).
    public static let moduleLoadOrder = ["virtio_ring", "virtio", "virtio_mmio", "virtio_console", "virtio_balloon"]
    /// What root file systems need after those, in load order: the block device, erofs (whose
    /// libcrc32c asks the crypto API for crc32c, which no modprobe can load on demand), and
    /// overlayfs for the writable layer.
    public static let rootFilesystemModules = ["virtio_blk", "crc32c_generic", "libcrc32c", "erofs", "overlay"]
    /// Every module an image may take.
    static var allModules: [String] { moduleLoadOrder + rootFilesystemModules }

    /// e.g. `linux-image-6.1.0-56-amd64`.
    public let name: String
    /// The package version, e.g. `6.1.192-2`.
    public let version: String
    /// The folder holding `vmlinux` and `modules/`.
    public let directory: String

    public var vmlinux: String { directory + "/vmlinux" }
    public func module(_ name: String) -> String { directory + "/modules/\(name).ko" }

    /// The concrete kernel package `linux-image-amd64` depends on, from `apt-cache depends`.
    public static func parseDependency(aptCacheDepends output: String) -> String? {
        for line in output.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("Depends:") else { continue }
            let package = trimmed.dropFirst("Depends:".count).trimmingCharacters(in: .whitespaces)
            if package.hasPrefix("linux-image-"), package.hasSuffix("-amd64") { return package }
        }
        return nil
    }

    /// Returns the cached kernel, fetching and extracting it first when needed.
    /// - Parameters:
    ///   - cache: the image cache root (`.local/images`).
    ///   - package: a concrete package name; nil resolves `linux-image-amd64`'s dependency.
    static func fetch(cache: String, package requested: String?, logger: Logger) async throws(VMError) -> KernelPackage {
        let scratch = cache + "/tmp"
        try makeDirectories(scratch)
        let name: String
        if let requested {
            name = requested
        } else {
            let output = try await HostCommand("apt-cache", ["depends", "linux-image-amd64"], timeout: .seconds(60))
                .run(scratch: scratch)
            guard let resolved = parseDependency(aptCacheDepends: output.stdoutText) else {
                throw .imageBuildFailed(step: "resolving the kernel package",
                                        reason: "apt-cache knows no linux-image-amd64 dependency; run `apt-get update` and try again")
            }
            name = resolved
        }
        let directory = cache + "/kernels/" + name
        if let version = readFile(directory + "/package-version").map({ String(decoding: $0, as: UTF8.self) }),
           access(directory + "/vmlinux", R_OK) == 0,
           allModules.allSatisfy({ access(directory + "/modules/\($0).ko", R_OK) == 0 })
        {
            return KernelPackage(name: name, version: version, directory: directory)
        }

        let work = scratch + "/kernel-\(getpid())"
        removeTree(work)
        try makeDirectories(work)
        defer { removeTree(work) }
        logger.info("image: downloading \(name) with apt-get (about 70 MB, once)")
        try await HostCommand("apt-get", ["download", "-q", name], in: work, timeout: .seconds(900)).run(scratch: scratch)
        guard let deb = listDirectory(work).first(where: { $0.hasSuffix(".deb") }) else {
            throw .imageBuildFailed(step: "downloading \(name)", reason: "apt-get download left no .deb in \(work)")
        }
        let version = try await HostCommand("dpkg-deb", ["-f", work + "/" + deb, "Version"], timeout: .seconds(60))
            .run(scratch: scratch).stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        logger.info("image: unpacking \(deb)")
        try await HostCommand("dpkg", ["-x", work + "/" + deb, work + "/pkg"], timeout: .seconds(600)).run(scratch: scratch)

        let staging = directory + ".tmp-\(getpid())"
        removeTree(staging)
        try makeDirectories(staging + "/modules")
        guard let vmlinuz = listDirectory(work + "/pkg/boot").first(where: { $0.hasPrefix("vmlinuz-") }) else {
            throw .imageBuildFailed(step: "unpacking \(name)", reason: "no boot/vmlinuz-* in the package")
        }
        logger.info("image: extracting vmlinux from \(vmlinuz) (xz payload)")
        try await extractVmlinux(from: work + "/pkg/boot/" + vmlinuz, to: staging + "/vmlinux", scratch: work)
        for module in allModules {
            guard let found = findFile(under: work + "/pkg/lib/modules", named: [module + ".ko", module + ".ko.xz"]) else {
                throw .imageBuildFailed(step: "collecting modules", reason: "\(module).ko is not in \(name)")
            }
            let target = staging + "/modules/\(module).ko"
            if found.hasSuffix(".xz") {
                try await HostCommand("xz", ["-dc", found], timeout: .seconds(60), stdoutPath: target).run(scratch: work)
            } else {
                try copyFile(found, to: target, mode: 0o644)
            }
        }
        try writeFile(staging + "/package-version", Array(version.utf8))
        removeTree(directory)
        guard rename(staging, directory) == 0 else {
            throw .hostFailure("rename \(staging) → \(directory): \(String(cString: strerror(errno)))")
        }
        return KernelPackage(name: name, version: version, directory: directory)
    }

    /// Writes the uncompressed kernel inside `vmlinuz` to `target`: tries each xz magic in turn
    /// until one decompresses to an ELF file.
    static func extractVmlinux(from vmlinuz: String, to target: String, scratch: String) async throws(VMError) {
        guard let bytes = readFile(vmlinuz) else { throw .imageBuildFailed(step: "reading \(vmlinuz)", reason: "cannot read it") }
        let offsets = XZPayload.offsets(in: bytes)
        guard !offsets.isEmpty else {
            throw .imageBuildFailed(step: "extracting vmlinux", reason: "\(vmlinuz) holds no xz stream (FD 37 7A 58 5A 00)")
        }
        let tail = scratch + "/payload.xz"
        for offset in offsets {
            try writeFile(tail, Array(bytes[offset...]))
            let command = HostCommand("xz", ["-dc", "--single-stream", tail], timeout: .seconds(120),
                                      stdoutPath: target)
            if (try? await command.run(scratch: scratch)) != nil, let head = readPrefix(target, count: 4),
               XZPayload.isELF(head)
            {
                unlink(tail)
                return
            }
        }
        unlink(target)
        throw .imageBuildFailed(step: "extracting vmlinux", reason: "none of \(offsets.count) xz streams in \(vmlinuz) is an ELF kernel")
    }
}
