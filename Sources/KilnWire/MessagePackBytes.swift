/// Hand-written MessagePack for the few shapes the serve-mode fast paths splice together: a
/// string, an unsigned integer, a map header. Same bytes msgpack-c writes for them.
enum MessagePackBytes {
    /// The keys of serve-mode frames, encoded (fixstr).
    static let idKey: [UInt8] = [0xa2] + Array("id".utf8)
    static let argsKey: [UInt8] = [0xa4] + Array("args".utf8)
    static let errorKey: [UInt8] = [0xa5] + Array("error".utf8)
    static let outputKey: [UInt8] = [0xa6] + Array("output".utf8)
    static let contextKey: [UInt8] = [0xa7] + Array("context".utf8)
    static let deadlineKey: [UInt8] = [0xab] + Array("deadline_ms".utf8)

    static func appendString(_ text: String, to bytes: inout [UInt8]) {
        let utf8 = text.utf8
        let count = utf8.count
        if count < 32 {
            bytes.append(0xa0 | UInt8(count))
        } else if count <= 0xff {
            bytes += [0xd9, UInt8(count)]
        } else if count <= 0xffff {
            bytes += [0xda, UInt8(count >> 8), UInt8(count & 0xff)]
        } else {
            bytes += [0xdb, UInt8(count >> 24 & 0xff), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)]
        }
        bytes += utf8
    }

    static func appendUInt(_ value: UInt64, to bytes: inout [UInt8]) {
        if value < 0x80 {
            bytes.append(UInt8(value))
        } else if value <= 0xff {
            bytes += [0xcc, UInt8(value)]
        } else if value <= 0xffff {
            bytes += [0xcd, UInt8(value >> 8), UInt8(value & 0xff)]
        } else if value <= 0xffff_ffff {
            bytes += [0xce] + (0..<4).reversed().map { UInt8(value >> ($0 * 8) & 0xff) }
        } else {
            bytes += [0xcf] + (0..<8).reversed().map { UInt8(value >> ($0 * 8) & 0xff) }
        }
    }

    static func appendMapHeader(count: Int, to bytes: inout [UInt8]) {
        if count <= 15 {
            bytes.append(0x80 | UInt8(count))
        } else if count <= 0xffff {
            bytes += [0xde, UInt8(count >> 8), UInt8(count & 0xff)]
        } else {
            bytes += [0xdf, UInt8(count >> 24 & 0xff), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)]
        }
    }
}
