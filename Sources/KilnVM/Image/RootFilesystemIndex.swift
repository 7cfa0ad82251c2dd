/// What a built root file system holds, as a list of paths: kept beside its block image, so that
/// the image builder can check and resolve method entries (a program on the root's PATH, an
/// absolute path, symbolic links followed inside the root) without unpacking it again.
///
/// The text form is what `find . -printf '%y %m %p\0%l\0'` writes in the root: the type letter,
/// the octal mode, the path from `./`, a NUL, the link target (empty but for links), a NUL.
struct RootFilesystemIndex: Equatable {
    enum Kind: Equatable {
        case file(mode: UInt32)
        case directory
        case symlink(target: String)
        case other
    }

    /// Absolute path inside the root → what it is.
    private(set) var entries: [String: Kind] = [:]

    init(entries: [String: Kind]) {
        self.entries = entries
    }

    /// Parses the `find` listing.
    init(listing: [UInt8]) {
        let fields = listing.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        var index = 0
        while index + 1 < fields.count {
            let head = fields[index], target = fields[index + 1]
            index += 2
            let parts = head.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let mode = UInt32(parts[1], radix: 8) else { continue }
            var path = String(parts[2])
            if path.hasPrefix(".") { path.removeFirst() }
            if path.isEmpty { path = "/" }
            switch parts[0] {
            case "f": entries[path] = .file(mode: mode)
            case "d": entries[path] = .directory
            case "l": entries[path] = .symlink(target: target)
            default: entries[path] = .other
            }
        }
    }

    /// The `find` arguments (run in the root) that write the listing.
    static let findArguments = [".", "-printf", "%y %m %p\\0%l\\0"]

    /// The folders searched for a program named without a slash, in order.
    static let searchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// `path` with every symbolic link along it followed inside the root (an absolute target is
    /// taken from the root, `..` stops there); nil when some part is missing or the links loop.
    func resolve(_ path: String) -> String? {
        var pending = path.split(separator: "/").map(String.init)
        var resolved: [String] = []
        var links = 0
        while !pending.isEmpty {
            let part = pending.removeFirst()
            if part == "." || part.isEmpty { continue }
            if part == ".." {
                _ = resolved.popLast()
                continue
            }
            let candidate = "/" + (resolved + [part]).joined(separator: "/")
            switch entries[candidate] {
            case nil:
                return nil
            case .symlink(let target)?:
                links += 1
                guard links <= 40 else { return nil }
                if target.hasPrefix("/") { resolved = [] }
                pending = target.split(separator: "/").map(String.init) + pending
            default:
                resolved.append(part)
            }
        }
        return "/" + resolved.joined(separator: "/")
    }

    /// Where `program` is: its own path when it has a slash, else the first executable of that
    /// name in `searchPath`; the path is returned as given (links are the kernel's business),
    /// and nil when it does not lead to an executable file.
    func locate(_ program: String, searchPath: [String] = RootFilesystemIndex.searchPath) -> String? {
        guard !program.contains("/") || program.hasPrefix("/") else { return nil }
        let candidates = program.hasPrefix("/") ? [program] : searchPath.map { $0 + "/" + program }
        for candidate in candidates {
            if let real = resolve(candidate), case .file(let mode)? = entries[real], mode & 0o111 != 0 { return candidate }
        }
        return nil
    }
}
