import Glibc

/// Applies image layers, in order, to a folder that becomes a root file system, the way a
/// container runtime does: files, folders, links and FIFOs with their modes and owners; a
/// `.wh.NAME` entry deletes NAME from the layers below, `.wh..wh..opq` empties its folder of
/// them. Nothing is written outside the root: an entry with `..` in its path, a hard link to
/// outside, or a write through a symbolic link that is absolute or climbs out of the root is an
/// error naming the layer and the entry, and so is a whiteout of a path no layer below made.
struct LayerApplier {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let root: String
    /// The most bytes all layers' files may hold together (a decompression bomb stops here).
    let maxBytes: Int
    private(set) var bytesWritten = 0

    init(root: String, maxBytes: Int) {
        self.root = root
        self.maxBytes = maxBytes
    }

    /// Applies the uncompressed layer tar at `path`; `name` (e.g. `layer 2 of 3`) names it in errors.
    mutating func apply(layer path: String, name: String) throws(Failure) {
        var reader: TarReader
        do { reader = try TarReader(path: path, name: name) } catch { throw Failure(description: error.description) }
        defer { reader.close() }
        // Paths this layer made: an opaque whiteout empties a folder of the layers below only.
        var madeHere: Set<String> = []
        var opaque: [String] = []
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let next: TarReader.Entry?
            do { next = try reader.next() } catch { throw Failure(description: error.description) }
            guard let entry = next else { break }
            let parts = try components(of: entry.path, layer: name)
            guard let last = parts.last else { continue }  // the root itself
            let parent = Array(parts.dropLast())
            let folder = try resolveFolder(parent, layer: name, entry: entry.path)
            if last == ".wh..wh..opq" {
                opaque.append(folder)
                continue
            }
            if last.hasPrefix(".wh.") {
                let target = folder + "/" + String(last.dropFirst(4))
                var info = stat()
                guard lstat(target, &info) == 0 else {
                    throw Failure(description: "\(name): the whiteout \(entry.path.prefix(200)) deletes \(relative(target)), which no layer below made")
                }
                removeTree(target)
                continue
            }
            let target = folder + "/" + last
            madeHere.insert(target)
            try write(entry, to: target, reader: &reader, buffer: &buffer, layer: name)
        }
        for folder in opaque {
            for child in listDirectory(folder) where !madeHere.contains(folder + "/" + child) {
                removeTree(folder + "/" + child)
            }
        }
    }

    private mutating func write(
        _ entry: TarReader.Entry, to target: String, reader: inout TarReader, buffer: inout [UInt8], layer: String
    ) throws(Failure) {
        var existing = stat()
        let exists = lstat(target, &existing) == 0
        let isFolder = exists && existing.st_mode & S_IFMT == S_IFDIR
        if exists && !(isFolder && entry.kind == .directory) { removeTree(target) }
        switch entry.kind {
        case .directory:
            if !isFolder, mkdir(target, 0o755) != 0 { throw failure(layer, entry, "mkdir") }
            _ = chmod(target, mode_t(entry.mode))
        case .file:
            bytesWritten += entry.size
            guard bytesWritten <= maxBytes else {
                throw Failure(description: "\(layer): the layers hold over \(maxBytes / 1_048_576) MiB (--max-rootfs-mb)")
            }
            let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw failure(layer, entry, "create") }
            defer { close(fd) }
            while true {
                let count: Int
                do { count = try reader.readData(into: &buffer) } catch { throw Failure(description: error.description) }
                if count == 0 { break }
                var offset = 0
                while offset < count {
                    let written = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, count - offset) }
                    guard written > 0 else { throw failure(layer, entry, "write") }
                    offset += written
                }
            }
            _ = fchmod(fd, mode_t(entry.mode))
        case .symbolicLink(let destination):
            if symlink(destination, target) != 0 { throw failure(layer, entry, "symlink") }
        case .hardLink(let destination):
            let parts = try components(of: destination, layer: layer)
            let source = try resolveFolder(Array(parts.dropLast()), layer: layer, entry: entry.path) + "/" + (parts.last ?? "")
            var info = stat()
            guard lstat(source, &info) == 0, info.st_mode & S_IFMT != S_IFDIR else {
                throw Failure(description: "\(layer): the hard link \(entry.path.prefix(200)) names \(destination.prefix(200)), which is not a file in the root")
            }
            if link(source, target) != 0 { throw failure(layer, entry, "link") }
            return  // a hard link shares its file's owner and mode
        case .fifo:
            if mkfifo(target, mode_t(entry.mode)) != 0 { throw failure(layer, entry, "mkfifo") }
        case .device:
            return  // no device nodes in a method's root: its /dev is the agent's
        }
        _ = lchown(target, entry.uid, entry.gid)
        if entry.kind == .file || entry.kind == .directory { _ = chmod(target, mode_t(entry.mode)) }
    }

    /// The path's parts, without `.` or empty ones; `..` is an error.
    private func components(of path: String, layer: String) throws(Failure) -> [String] {
        let parts = path.split(separator: "/").map(String.init).filter { $0 != "." }
        if parts.contains("..") {
            throw Failure(description: "\(layer): the entry \(path.prefix(200)) has '..' in its path: it would leave the root")
        }
        return parts
    }

    /// The real folder `parts` name under the root, made when missing; symbolic links along the
    /// way are followed when they are relative and stay in the root, else it is an error.
    private func resolveFolder(_ parts: [String], layer: String, entry: String) throws(Failure) -> String {
        var resolved: [String] = []
        var pending = parts
        var links = 0
        while !pending.isEmpty {
            let part = pending.removeFirst()
            if part == "." || part.isEmpty { continue }
            if part == ".." {
                guard !resolved.isEmpty else {
                    throw Failure(description: "\(layer): \(entry.prefix(200)) goes through a symbolic link that climbs out of the root")
                }
                resolved.removeLast()
                continue
            }
            let path = root + "/" + (resolved + [part]).joined(separator: "/")
            var info = stat()
            if lstat(path, &info) != 0 {
                guard mkdir(path, 0o755) == 0 else {
                    throw Failure(description: "\(layer): cannot make the folder \(relative(path)) for \(entry.prefix(200)): \(String(cString: strerror(errno)))")
                }
                resolved.append(part)
                continue
            }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                resolved.append(part)
            case S_IFLNK:
                let target = readLink(path)
                links += 1
                guard !target.hasPrefix("/"), links <= 40 else {
                    throw Failure(description: "\(layer): \(entry.prefix(200)) goes through the symbolic link \(relative(path)) → \(target.prefix(200)), which an unpacker must not follow (it is absolute or loops)")
                }
                pending = target.split(separator: "/").map(String.init) + pending
            default:
                throw Failure(description: "\(layer): \(entry.prefix(200)) needs \(relative(path)) to be a folder, and a layer below made it a file")
            }
        }
        return root + (resolved.isEmpty ? "" : "/" + resolved.joined(separator: "/"))
    }

    private func readLink(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4_097)
        let count = readlink(path, &buffer, 4_096)
        return count > 0 ? String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    }

    private func relative(_ path: String) -> String {
        path.hasPrefix(root) ? "/" + path.dropFirst(root.count).drop { $0 == "/" } : path
    }

    private func failure(_ layer: String, _ entry: TarReader.Entry, _ step: String) -> Failure {
        Failure(description: "\(layer): \(step) \(entry.path.prefix(200)): \(String(cString: strerror(errno)))")
    }
}
