/// Checks that a body is exactly one well-formed MessagePack value within ``WireLimits``, without
/// allocating anything sized by the input.
///
/// msgpack-c's unpacker trusts length prefixes: an array header claiming 2³² elements makes it
/// allocate for them before reading one. Every decode runs this scan first, so that what reaches
/// msgpack-c is bounded by the body's real size and the limits.
struct MessagePackValidator {
    let limits: WireLimits

    /// Scans `bytes`, throwing the first problem found.
    func validate(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        let end = bytes.count
        guard end <= limits.maxBodyBytes else {
            throw .limitExceeded(.bodyBytes, actual: end, maximum: limits.maxBodyBytes, offset: 0)
        }
        guard end > 0 else { throw .truncated(offset: 0) }
        let position = try endOfValue(in: bytes, at: 0)
        guard position == end else { throw .trailingBytes(count: end - position, offset: position) }
    }

    /// Scans the one value that starts at `start` and returns the offset just past it.
    func endOfValue(in bytes: UnsafeRawBufferPointer, at start: Int) throws(WireError) -> Int {
        let end = bytes.count
        // Children still to read in each open container, innermost last.
        var open: [Int] = []
        var position = start
        var elements = 0

        repeat {
            let start = position
            if !open.isEmpty { open[open.count - 1] -= 1 }
            elements += 1
            guard elements <= limits.maxTotalElements else {
                throw .limitExceeded(.totalElements, actual: elements, maximum: limits.maxTotalElements, offset: start)
            }
            guard position < end else { throw .truncated(offset: start) }
            let marker = bytes[position]
            position += 1

            /// Reads a big-endian length of `width` bytes that follows the marker.
            func length(_ width: Int) throws(WireError) -> Int {
                guard end - position >= width else { throw .truncated(offset: start) }
                var value = 0
                for index in 0..<width { value = value << 8 | Int(bytes[position + index]) }
                position += width
                return value
            }
            /// Skips a payload of `count` bytes after checking it against `limit`.
            func payload(_ count: Int, limit: WireLimit, maximum: Int) throws(WireError) {
                guard count <= maximum else {
                    throw .limitExceeded(limit, actual: count, maximum: maximum, offset: start)
                }
                guard end - position >= count else { throw .truncated(offset: start) }
                position += count
            }
            /// Skips a fixed-size scalar body of `count` bytes.
            func scalar(_ count: Int) throws(WireError) {
                guard end - position >= count else { throw .truncated(offset: start) }
                position += count
            }
            /// Opens a container of `count` children (2 per map entry).
            func container(entries: Int, children: Int) throws(WireError) {
                guard open.count < limits.maxDepth else {
                    throw .limitExceeded(.depth, actual: open.count + 1, maximum: limits.maxDepth, offset: start)
                }
                guard entries <= limits.maxContainerLength else {
                    throw .limitExceeded(.containerLength, actual: entries, maximum: limits.maxContainerLength, offset: start)
                }
                // Every child takes at least one byte: a longer claim is a lie about the input.
                guard children <= end - position else { throw .truncated(offset: start) }
                if children > 0 { open.append(children) }
            }

            switch marker {
            case 0x00...0x7f, 0xe0...0xff, 0xc0, 0xc2, 0xc3:
                break
            case 0x80...0x8f:
                let entries = Int(marker & 0x0f)
                try container(entries: entries, children: entries * 2)
            case 0x90...0x9f:
                let count = Int(marker & 0x0f)
                try container(entries: count, children: count)
            case 0xa0...0xbf:
                try payload(Int(marker & 0x1f), limit: .stringBytes, maximum: limits.maxStringBytes)
            case 0xc1:
                throw .invalidByte(marker, offset: start)
            case 0xc4, 0xc5, 0xc6:
                let count = try length(1 << Int(marker - 0xc4))
                try payload(count, limit: .binaryBytes, maximum: limits.maxBinaryBytes)
            case 0xc7, 0xc8, 0xc9:
                let count = try length(1 << Int(marker - 0xc7))
                try payload(count + 1, limit: .binaryBytes, maximum: limits.maxBinaryBytes)
            case 0xca: try scalar(4)
            case 0xcb: try scalar(8)
            case 0xcc...0xcf: try scalar(1 << Int(marker - 0xcc))
            case 0xd0...0xd3: try scalar(1 << Int(marker - 0xd0))
            case 0xd4...0xd8: try scalar(1 + (1 << Int(marker - 0xd4)))
            case 0xd9, 0xda, 0xdb:
                let count = try length(1 << Int(marker - 0xd9))
                try payload(count, limit: .stringBytes, maximum: limits.maxStringBytes)
            case 0xdc, 0xdd:
                let count = try length(2 << Int(marker - 0xdc))
                try container(entries: count, children: count)
            case 0xde, 0xdf:
                let count = try length(2 << Int(marker - 0xde))
                try container(entries: count, children: count * 2)
            default:
                throw .invalidByte(marker, offset: start)
            }

            while let last = open.last, last == 0 { open.removeLast() }
        } while !open.isEmpty
        return position
    }
}
