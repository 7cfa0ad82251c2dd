import Glibc

/// Everything that goes into a guest's initramfs, before any of it is copied: the image's
/// content hash is computed from this plan, so an unchanged image is found in the cache without
/// being staged again.
struct InitramfsPlan {
    enum Source: Equatable {
        case directory(mode: UInt32)
        /// A host file, copied (and stripped of symbols when `strip`).
        case hostFile(String, mode: UInt32, strip: Bool)
        case text(String, mode: UInt32)
        case bytes([UInt8], mode: UInt32)
        case symlink(String)
    }

    /// Guest path (absolute) → source.
    private(set) var entries: [String: Source] = [:]

    mutating func directory(_ path: String, mode: UInt32 = 0o755) {
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            if entries[current] == nil { entries[current] = .directory(mode: mode) }
        }
    }

    mutating func add(_ path: String, _ source: Source) {
        directory(parent(of: path))
        entries[path] = source
    }

    /// Paths sorted so that a directory comes before what it holds.
    var sortedPaths: [String] { entries.keys.sorted() }

    /// Host files the plan copies.
    var hostFiles: [String] {
        sortedPaths.compactMap { path in
            if case .hostFile(let source, _, _) = entries[path] { return source }
            return nil
        }
    }

    /// The text the content hash is taken over: one line per entry, with each host file's SHA-256.
    func fingerprint(fileHashes: [String: String], extra: [String]) -> String {
        var lines = extra
        for path in sortedPaths {
            switch entries[path]! {
            case .directory(let mode): lines.append("d \(path) \(String(mode, radix: 8))")
            case .hostFile(let source, let mode, let strip):
                lines.append("f \(path) \(String(mode, radix: 8)) \(strip ? "strip" : "copy") \(fileHashes[source] ?? "?")")
            case .text(let text, let mode):
                lines.append("t \(path) \(String(mode, radix: 8)) \(SHA256Text.hex(text))")
            case .bytes(let bytes, let mode):
                lines.append("b \(path) \(String(mode, radix: 8)) \(SHA256.hash(bytes).hexString)")
            case .symlink(let target): lines.append("l \(path) \(target)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }
}

/// Shared libraries of a dynamically linked program, from `ldd`.
enum SharedLibraries {
    /// Parses `ldd` output into the absolute paths of the libraries and the loader.
    static func parse(lddOutput: String) -> [String] {
        var paths: [String] = []
        for line in lddOutput.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if let arrow = fields.firstIndex(of: "=>"), arrow + 1 < fields.count, fields[arrow + 1].hasPrefix("/") {
                paths.append(String(fields[arrow + 1]))
            } else if let first = fields.first, first.hasPrefix("/") {
                paths.append(String(first))
            }
        }
        return paths
    }

    /// The libraries `program` loads; empty for a static program.
    static func of(_ program: String, scratch: String) async throws(VMError) -> [String] {
        var command = HostCommand("ldd", [program], timeout: .seconds(30))
        command.acceptedExitCodes = [0, 1]  // 1: "not a dynamic executable"
        let output = try await command.run(scratch: scratch)
        return parse(lddOutput: output.stdoutText)
    }
}

import KilnDigest

/// SHA-256 of a string, as hex.
enum SHA256Text {
    static func hex(_ text: String) -> String { SHA256.hash(Array(text.utf8)).hexString }
}
