import Foundation
import Testing

@testable import KilnVM

@Suite("Kernel payload (xz magic, vmlinux extraction)")
struct XZPayloadTests {
    @Test func findsEveryMagic() {
        let magic = XZPayload.magic
        var bytes = [UInt8](repeating: 0, count: 40)
        bytes.replaceSubrange(3..<9, with: magic)
        bytes.replaceSubrange(30..<36, with: magic)
        #expect(XZPayload.offsets(in: bytes) == [3, 30])
        #expect(XZPayload.offsets(in: Array(magic.prefix(5))) == [])
        #expect(XZPayload.offsets(in: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x01]) == [])
        #expect(XZPayload.offsets(in: magic) == [0])
    }

    @Test func recognisesELF() {
        #expect(XZPayload.isELF([0x7F, 0x45, 0x4C, 0x46, 2, 1]))
        #expect(!XZPayload.isELF([0x7F, 0x45, 0x4C]))
        #expect(!XZPayload.isELF(Array("MZ..".utf8)))
    }

    /// A fake vmlinuz: a boot stub holding a decoy magic, then an xz stream of an "ELF" kernel,
    /// then trailing bytes. Extraction must skip the decoy and ignore the tail.
    @Test func extractsTheELFBehindTheStub() async throws {
        let folder = NSTemporaryDirectory() + "kiln-xz-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let kernel = XZPayload.elfMagic + Array("fake kernel body ".utf8) + (0..<4000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try Data(kernel).write(to: URL(fileURLWithPath: folder + "/kernel"))
        try await HostCommand("xz", ["-k", "-f", folder + "/kernel"]).run(scratch: folder)
        let compressed = try [UInt8](Data(contentsOf: URL(fileURLWithPath: folder + "/kernel.xz")))
        let stub = Array("BOOT STUB".utf8) + XZPayload.magic + Array("not a stream".utf8)
        try Data(stub + compressed + Array("trailer".utf8)).write(to: URL(fileURLWithPath: folder + "/vmlinuz"))

        try await KernelPackage.extractVmlinux(from: folder + "/vmlinuz", to: folder + "/vmlinux", scratch: folder)
        let extracted = try [UInt8](Data(contentsOf: URL(fileURLWithPath: folder + "/vmlinux")))
        #expect(extracted == kernel)
    }

    @Test func failsClearlyWithoutAnXZStream() async throws {
        let folder = NSTemporaryDirectory() + "kiln-xz-none-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try Data(Array("no payload here".utf8)).write(to: URL(fileURLWithPath: folder + "/vmlinuz"))
        await #expect(throws: VMError.self) {
            try await KernelPackage.extractVmlinux(from: folder + "/vmlinuz", to: folder + "/vmlinux", scratch: folder)
        }
    }

    @Test func resolvesTheKernelPackageFromAptCache() {
        let output = """
            linux-image-amd64
              Depends: linux-image-6.1.0-56-amd64
            """
        #expect(KernelPackage.parseDependency(aptCacheDepends: output) == "linux-image-6.1.0-56-amd64")
        #expect(KernelPackage.parseDependency(aptCacheDepends: "linux-image-amd64\n") == nil)
    }
}
