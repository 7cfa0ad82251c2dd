/// A writer of `newc` cpio archives (the initramfs format): a 110-byte ASCII header per entry,
/// the NUL-terminated name and the data each padded to 4 bytes, and a `TRAILER!!!` entry.
/// Entries are written exactly as given — owner root, mtime 0 — so the same input gives the same
/// bytes.
public struct CPIOArchive {
    /// The kind of an entry, with what it needs.
    public enum Entry: Equatable, Sendable {
        case directory
        case file([UInt8], executable: Bool)
        case symlink(target: String)
        case characterDevice(major: UInt32, minor: UInt32)
    }

    /// The archive so far (without its trailer until ``finish()``).
    public private(set) var bytes: [UInt8] = []
    private var nextInode: UInt32 = 1
    private var finished = false

    public init() {}

    /// Appends an entry. `path` is relative to the archive root, without a leading slash.
    /// `mode` are the permission bits; the file type comes from `entry`.
    public mutating func add(_ path: String, _ entry: Entry, mode: UInt32? = nil) {
        precondition(!finished, "CPIOArchive: add after finish")
        let name = path.hasPrefix("/") ? String(path.dropFirst()) : path
        var data: [UInt8] = []
        var fileMode: UInt32
        var rdevMajor: UInt32 = 0
        var rdevMinor: UInt32 = 0
        switch entry {
        case .directory:
            fileMode = 0o040000 | (mode ?? 0o755)
        case .file(let content, let executable):
            fileMode = 0o100000 | (mode ?? (executable ? 0o755 : 0o644))
            data = content
        case .symlink(let target):
            fileMode = 0o120000 | (mode ?? 0o777)
            data = Array(target.utf8)
        case .characterDevice(let major, let minor):
            fileMode = 0o020000 | (mode ?? 0o600)
            rdevMajor = major
            rdevMinor = minor
        }
        let nameBytes = Array(name.utf8) + [0]
        let inode = nextInode
        nextInode += 1
        let fields: [UInt32] = [
            inode, fileMode, 0, 0, entry == .directory ? 2 : 1, 0, UInt32(data.count),
            0, 0, rdevMajor, rdevMinor, UInt32(nameBytes.count), 0,
        ]
        appendHeader(fields: fields, name: nameBytes)
        bytes.append(contentsOf: data)
        pad()
    }

    /// Appends the trailer; the archive is complete.
    public mutating func finish() {
        guard !finished else { return }
        let nameBytes = Array("TRAILER!!!".utf8) + [0]
        appendHeader(fields: [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, UInt32(nameBytes.count), 0], name: nameBytes)
        finished = true
    }

    private mutating func appendHeader(fields: [UInt32], name: [UInt8]) {
        bytes.append(contentsOf: Array("070701".utf8))
        for field in fields { bytes.append(contentsOf: Self.hex8(field)) }
        bytes.append(contentsOf: name)
        pad()
    }

    private mutating func pad() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    /// Eight upper-case hex digits.
    static func hex8(_ value: UInt32) -> [UInt8] {
        let digits = Array("0123456789ABCDEF".utf8)
        return (0..<8).reversed().map { digits[Int((value >> (UInt32($0) * 4)) & 0xF)] }
    }
}
