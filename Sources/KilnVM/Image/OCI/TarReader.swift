import Glibc

/// Reads a tar archive from a file, entry by entry: ustar and GNU headers, GNU long names and
/// links (`L`, `K`), and pax extended headers (`x`, `g`: `path`, `linkpath`, `size`, `uid`,
/// `gid`). A header whose checksum does not add up, or a file that ends inside an entry, is an
/// error: an OCI layer or image archive that is not one.
struct TarReader {
    /// One entry's header.
    struct Entry: Equatable {
        enum Kind: Equatable {
            case file
            case hardLink(target: String)
            case symbolicLink(target: String)
            case directory
            case fifo
            /// A character or block device: not taken into a root file system.
            case device
        }

        var path: String
        var kind: Kind
        var mode: UInt32
        var uid: UInt32
        var gid: UInt32
        var size: Int
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let fd: Int32
    private let name: String
    /// Bytes of the current entry's data not yet read, and the padding after them.
    private var remaining = 0
    private var padding = 0
    private var globalPax: [String: String] = [:]

    /// Opens `path` (an uncompressed tar file); `name` names it in errors.
    init(path: String, name: String) throws(Failure) {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "\(name): cannot open \(path): \(String(cString: strerror(errno)))") }
        self.name = name
    }

    func close() { _ = Glibc.close(fd) }

    /// The next entry's header (its data is read with ``readData(into:)`` or skipped by the next
    /// call); nil at the end of the archive.
    mutating func next() throws(Failure) -> Entry? {
        try skip(remaining + padding)
        remaining = 0
        padding = 0
        var longName: String?
        var longLink: String?
        var pax: [String: String] = [:]
        while true {
            var header = [UInt8](repeating: 0, count: 512)
            let count = try readFully(&header)
            if count == 0 { return nil }  // a bare end is tolerated
            guard count == 512 else { throw Failure(description: "\(name) ends inside a header") }
            if header.allSatisfy({ $0 == 0 }) { return nil }
            guard Self.checksumMatches(header) else {
                throw Failure(description: "\(name) is not a tar archive, or is corrupt (a header's checksum does not add up)")
            }
            let type = header[156]
            var size = try number(header, 124, 12, "size")
            if let paxSize = pax["size"] ?? globalPax["size"], let exact = Int(paxSize) { size = exact }
            guard size >= 0, size < 1 << 40 else { throw Failure(description: "\(name): an entry claims \(size) bytes") }
            switch type {
            case UInt8(ascii: "L"), UInt8(ascii: "K"):
                var data = [UInt8](repeating: 0, count: min(size, 1 << 20))
                guard size <= 1 << 20, try readFully(&data) == size else { throw Failure(description: "\(name): a GNU long name is cut short") }
                try skip(Self.padding(size))
                let text = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
                if type == UInt8(ascii: "L") { longName = text } else { longLink = text }
                continue
            case UInt8(ascii: "x"), UInt8(ascii: "g"):
                var data = [UInt8](repeating: 0, count: min(size, 1 << 20))
                guard size <= 1 << 20, try readFully(&data) == size else { throw Failure(description: "\(name): a pax header is cut short") }
                try skip(Self.padding(size))
                let records = Self.paxRecords(data)
                if type == UInt8(ascii: "x") { pax.merge(records) { $1 } } else { globalPax.merge(records) { $1 } }
                continue
            default:
                break
            }
            let attributes = globalPax.merging(pax) { $1 }
            var path = longName ?? attributes["path"] ?? Self.text(header, 0, 100)
            let prefix = Self.text(header, 345, 155)
            if longName == nil, attributes["path"] == nil, header[257..<262].elementsEqual("ustar".utf8), !prefix.isEmpty {
                path = prefix + "/" + path
            }
            let link = longLink ?? attributes["linkpath"] ?? Self.text(header, 157, 100)
            let kind: Entry.Kind
            switch type {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = path.hasSuffix("/") ? .directory : .file
            case UInt8(ascii: "1"): kind = .hardLink(target: link)
            case UInt8(ascii: "2"): kind = .symbolicLink(target: link)
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "6"): kind = .fifo
            case UInt8(ascii: "3"), UInt8(ascii: "4"): kind = .device
            default:
                throw Failure(description: "\(name): entry \(path.prefix(200)) has type '\(Character(Unicode.Scalar(type)))', which a root file system cannot hold")
            }
            // Only regular files carry data; any other entry's size is skipped.
            remaining = size
            padding = Self.padding(size)
            let mode = try number(header, 100, 8, "mode") & 0o7777
            let headerUID = try number(header, 108, 8, "uid")
            let headerGID = try number(header, 116, 8, "gid")
            let uid = attributes["uid"].flatMap(Int.init) ?? headerUID
            let gid = attributes["gid"].flatMap(Int.init) ?? headerGID
            return Entry(path: path, kind: kind, mode: UInt32(mode), uid: UInt32(clamping: uid), gid: UInt32(clamping: gid),
                         size: kind == .file ? size : 0)
        }
    }

    /// Reads up to `buffer.count` bytes of the current entry's data; 0 at its end.
    mutating func readData(into buffer: inout [UInt8]) throws(Failure) -> Int {
        guard remaining > 0 else { return 0 }
        let want = min(buffer.count, remaining)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, want) }
        guard count > 0 else { throw Failure(description: "\(name) ends inside an entry's data") }
        remaining -= count
        return count
    }

    private func readFully(_ buffer: inout [UInt8]) throws(Failure) -> Int {
        var filled = 0
        while filled < buffer.count {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw Failure(description: "\(name): read: \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            filled += count
        }
        return filled
    }

    private func skip(_ count: Int) throws(Failure) {
        guard count > 0 else { return }
        let here = lseek(fd, 0, SEEK_CUR)
        let end = lseek(fd, 0, SEEK_END)
        guard here >= 0, end >= here + off_t(count) else { throw Failure(description: "\(name) ends inside an entry's data") }
        lseek(fd, here + off_t(count), SEEK_SET)
    }

    private func number(_ header: [UInt8], _ offset: Int, _ length: Int, _ field: String) throws(Failure) -> Int {
        let bytes = header[offset..<(offset + length)]
        if let first = bytes.first, first & 0x80 != 0 {
            // GNU base-256: big-endian, the top bit set.
            var value = Int(first & 0x7f)
            for byte in bytes.dropFirst() {
                guard value < Int.max >> 8 else { throw Failure(description: "\(name): a header's \(field) is too large") }
                value = value << 8 | Int(byte)
            }
            return value
        }
        let text = String(decoding: bytes.prefix { $0 != 0 && $0 != 0x20 }.drop { $0 == 0x20 }, as: UTF8.self)
        if text.isEmpty { return 0 }
        guard let value = Int(text, radix: 8) else { throw Failure(description: "\(name): a header's \(field) is not a number") }
        return value
    }

    static func text(_ header: [UInt8], _ offset: Int, _ length: Int) -> String {
        String(decoding: header[offset..<(offset + length)].prefix { $0 != 0 }, as: UTF8.self)
    }

    static func padding(_ size: Int) -> Int { (512 - size % 512) % 512 }

    static func checksumMatches(_ header: [UInt8]) -> Bool {
        let stored = String(decoding: header[148..<156].prefix { $0 != 0 && $0 != 0x20 }.drop { $0 == 0x20 }, as: UTF8.self)
        guard let expected = Int(stored, radix: 8) else { return false }
        var sum = 0
        for (index, byte) in header.enumerated() { sum += (148..<156).contains(index) ? 0x20 : Int(byte) }
        return sum == expected
    }

    /// `length key=value\n` records.
    static func paxRecords(_ data: [UInt8]) -> [String: String] {
        var records: [String: String] = [:]
        var index = 0
        while index < data.count {
            guard let space = data[index...].firstIndex(of: 0x20), let length = Int(String(decoding: data[index..<space], as: UTF8.self)),
                  length > 0, index + length <= data.count else { break }
            let record = data[(space + 1)..<(index + length - 1)]
            if let equals = record.firstIndex(of: UInt8(ascii: "=")) {
                records[String(decoding: record[..<equals], as: UTF8.self)] = String(decoding: record[(equals + 1)...], as: UTF8.self)
            }
            index += length
        }
        return records
    }
}
