import Foundation
import Glibc

// Small file helpers for the image builder (Foundation-free where it is simple to be).

/// Names in a folder, sorted; empty when it cannot be read.
func listDirectory(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// The first file below `root` whose name is one of `names` (depth first, sorted).
func findFile(under root: String, named names: Set<String>) -> String? {
    for name in listDirectory(root) {
        let path = root + "/" + name
        var info = stat()
        guard lstat(path, &info) == 0 else { continue }
        if info.st_mode & S_IFMT == S_IFDIR {
            if let found = findFile(under: path, named: names) { return found }
        } else if names.contains(name) {
            return path
        }
    }
    return nil
}

/// Writes `bytes` to `path` (replacing it), with `mode`.
func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(VMError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw .hostFailure("cannot create \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if written > 0 {
            offset += written
        } else if written < 0 && errno == EINTR {
            continue
        } else {
            throw .hostFailure("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
    fchmod(fd, mode)
}

/// Copies the content of `source` (following links) to `target`, with `mode`.
func copyFile(_ source: String, to target: String, mode: mode_t) throws(VMError) {
    guard let bytes = readFile(source) else { throw .hostFailure("cannot read \(source)") }
    try writeFile(target, bytes, mode: mode)
}

/// The first `count` bytes of a file.
func readPrefix(_ path: String, count: Int) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let got = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, count) }
    return got == count ? bytes : nil
}

/// The size of a file in bytes, or nil.
func fileSize(_ path: String) -> Int? {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : nil
}
