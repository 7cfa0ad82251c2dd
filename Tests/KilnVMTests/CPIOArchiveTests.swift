import Foundation
import Testing

@testable import KilnVM

@Suite("CPIO newc writer")
struct CPIOArchiveTests {
    /// Reads a newc archive back: (name, mode, rdev major, rdev minor, data) per entry.
    private func entries(of bytes: [UInt8]) throws -> [(name: String, mode: UInt32, major: UInt32, minor: UInt32, data: [UInt8])] {
        var result: [(String, UInt32, UInt32, UInt32, [UInt8])] = []
        var offset = 0
        func field(_ index: Int) -> UInt32 {
            let start = offset + 6 + index * 8
            return UInt32(String(decoding: bytes[start..<start + 8], as: UTF8.self), radix: 16)!
        }
        while true {
            #expect(String(decoding: bytes[offset..<offset + 6], as: UTF8.self) == "070701")
            let mode = field(1), size = Int(field(6)), major = field(9), minor = field(10), nameSize = Int(field(11))
            let nameStart = offset + 110
            let name = String(decoding: bytes[nameStart..<nameStart + nameSize - 1], as: UTF8.self)
            #expect(bytes[nameStart + nameSize - 1] == 0)
            var dataStart = nameStart + nameSize
            while dataStart % 4 != 0 { dataStart += 1 }
            let data = Array(bytes[dataStart..<dataStart + size])
            offset = dataStart + size
            while offset % 4 != 0 { offset += 1 }
            if name == "TRAILER!!!" { break }
            result.append((name, mode, major, minor, data))
        }
        #expect(offset == bytes.count)
        return result.map { (name: $0.0, mode: $0.1, major: $0.2, minor: $0.3, data: $0.4) }
    }

    @Test func writesEntriesThatReadBack() throws {
        var archive = CPIOArchive()
        archive.add("/bin", .directory)
        archive.add("/bin/tool", .file(Array("#!/bin/sh\necho hi\n".utf8), executable: true))
        archive.add("/bin/sh", .symlink(target: "busybox"))
        archive.add("/etc/odd-size", .file([1, 2, 3], executable: false), mode: 0o600)
        archive.add("/dev/console", .characterDevice(major: 5, minor: 1))
        archive.finish()
        #expect(archive.bytes.count % 4 == 0)

        let read = try entries(of: archive.bytes)
        #expect(read.map(\.name) == ["bin", "bin/tool", "bin/sh", "etc/odd-size", "dev/console"])
        #expect(read[0].mode == 0o040755)
        #expect(read[1].mode == 0o100755)
        #expect(read[1].data == Array("#!/bin/sh\necho hi\n".utf8))
        #expect(read[2].mode == 0o120777)
        #expect(read[2].data == Array("busybox".utf8))
        #expect(read[3].mode == 0o100600)
        #expect(read[3].data == [1, 2, 3])
        #expect(read[4].mode == 0o020600 && read[4].major == 5 && read[4].minor == 1)
    }

    @Test func sameInputGivesSameBytes() {
        func build() -> [UInt8] {
            var archive = CPIOArchive()
            archive.add("a", .file([9, 9], executable: false))
            archive.add("b", .symlink(target: "a"))
            archive.finish()
            return archive.bytes
        }
        #expect(build() == build())
    }

    @Test func gnuCpioListsTheArchive() throws {
        var archive = CPIOArchive()
        archive.add("/kiln", .directory)
        archive.add("/kiln/agent", .file(Array(repeating: 0x41, count: 1001), executable: true))
        archive.add("/init", .symlink(target: "kiln/agent"))
        archive.finish()
        let path = NSTemporaryDirectory() + "kiln-cpio-test-\(getpid()).cpio"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(archive.bytes).write(to: URL(fileURLWithPath: path))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "cpio -it --quiet < '\(path)'"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let listing = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "cpio is installed by deploy/local/install-deps.sh")
        #expect(listing.split(separator: "\n") == ["kiln", "kiln/agent", "init"])
    }
}
