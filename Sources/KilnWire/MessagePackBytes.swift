/// Hand-written MessagePack for the few shapes the serve-mode fast paths splice together: a
/// string, an unsigned integer, a map header. Same bytes msgpack-c writes for them.
enum MessagePackBytes {
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
