import Foundation
import Testing

@testable import KilnVM

/// What the image builder takes as a program: an ELF file, or a script whose interpreter the
/// guest has; anything else is refused at build time with the reason.
@Suite("Program files")
struct ProgramFileTests {
    func write(_ bytes: [UInt8], in folder: URL, as name: String) throws -> String {
        let path = folder.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func tellsExecutablesScriptsAndTheRest() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-programs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let elf = try write([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], in: folder, as: "elf")
        let shell = try write(Array("#! /bin/sh -e\necho hi\n".utf8), in: folder, as: "shell")
        let python = try write(Array("#!/usr/bin/env python3\nprint(1)\n".utf8), in: folder, as: "python")
        let text = try write(Array("hello".utf8), in: folder, as: "text")
        let bare = try write(Array("#!\n".utf8), in: folder, as: "bare")

        #expect(try ProgramFile.inspect(elf, name: "e") == .elf)
        #expect(try ProgramFile.inspect(shell, name: "s") == .script(interpreter: "/bin/sh", line: "#! /bin/sh -e"))
        #expect(try ProgramFile.inspect(python, name: "p") == .script(interpreter: "/usr/bin/env", line: "#!/usr/bin/env python3"))
        #expect(throws: VMError.self) { try ProgramFile.inspect(bare, name: "b") }
        do {
            _ = try ProgramFile.inspect(text, name: "t")
            Issue.record("a text file was taken as a program")
        } catch {
            #expect("\(error)".contains("neither an executable (ELF) nor a #! script"), "\(error)")
        }
        #expect(throws: VMError.self) { try ProgramFile.inspect(folder.appendingPathComponent("missing").path, name: "m") }

        let guest: Set = ["/bin/sh", "/bin/busybox"]
        try ProgramFile.script(interpreter: "/bin/sh", line: "#!/bin/sh").requireRunnable(path: shell, name: "s") { guest.contains($0) }
        do {
            try ProgramFile.inspect(python, name: "p").requireRunnable(path: python, name: "p") { guest.contains($0) }
            Issue.record("a script for an interpreter the guest lacks was taken")
        } catch {
            #expect("\(error)".contains("is a script (#!/usr/bin/env python3) and the guest has no /usr/bin/env"), "\(error)")
        }
        #expect(ProgramFile.elf.isStrippable && !ProgramFile.script(interpreter: "/bin/sh", line: "").isStrippable)
    }
}
