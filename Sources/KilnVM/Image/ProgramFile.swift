import Glibc

/// What a manifest program is on the host, told by its first bytes: an ELF executable (static,
/// or dynamic with the libraries `ldd` names, which the image takes along), or a `#!` script
/// whose interpreter must be in the guest. Anything else cannot start in the guest.
enum ProgramFile: Equatable {
    case elf
    /// A script: the interpreter's path and the whole `#!` line.
    case script(interpreter: String, line: String)

    /// Reads the start of `path`; `name` is the program's name in the manifest, for errors.
    static func inspect(_ path: String, name: String) throws(VMError) -> ProgramFile {
        let step = "adding program \(name)"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .imageBuildFailed(step: step, reason: "cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 256)
        let count = head.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        head = Array(head.prefix(max(0, count)))
        if head.starts(with: [0x7f, 0x45, 0x4c, 0x46]) { return .elf }
        if head.starts(with: Array("#!".utf8)) {
            let line = head.dropFirst(2).prefix { $0 != 0x0a }
            let interpreter = String(decoding: line, as: UTF8.self).trimmingPrefix(while: { $0 == " " || $0 == "\t" })
                .prefix { $0 != " " && $0 != "\t" }
            guard !interpreter.isEmpty else {
                throw .imageBuildFailed(step: step, reason: "\(path) starts with #! but names no interpreter")
            }
            return .script(interpreter: String(interpreter), line: "#!" + String(decoding: line, as: UTF8.self))
        }
        throw .imageBuildFailed(
            step: step, reason: "\(path) is neither an executable (ELF) nor a #! script: a program must be one the guest can start")
    }

    /// Throws unless the guest can run the program: a script's interpreter must be in the
    /// image (`present`), as busybox's `/bin/sh` is.
    func requireRunnable(path: String, name: String, present: (String) -> Bool) throws(VMError) {
        guard case .script(let interpreter, let line) = self, !present(interpreter) else { return }
        throw .imageBuildFailed(
            step: "adding program \(name)",
            reason: "\(path) is a script (\(line.prefix(120))) and the guest has no \(interpreter.prefix(120)): the guest holds busybox (/bin/sh and its applets in /bin) "
                + "and the agent, so a program must be an ELF executable (static, or dynamic: the libraries ldd names come along) or a /bin/sh script; "
                + "a method in Python or another runtime needs that runtime in the guest")
    }

    /// Whether the image builder strips the file's symbols (only an ELF file has any).
    var isStrippable: Bool { self == .elf }
}
