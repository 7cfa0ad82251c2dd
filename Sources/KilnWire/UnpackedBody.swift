import CMsgPack
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs `body` with the root object of `bytes` as unpacked by msgpack-c, after the validator has
/// checked the bytes against `limits`.
///
/// The objects live in msgpack-c's zone and point into `bytes`: they are valid only inside `body`.
func withUnpackedRoot<Result>(
    _ bytes: UnsafeRawBufferPointer,
    limits: WireLimits,
    _ body: (msgpack_object) throws -> Result
) throws -> Result {
    try MessagePackValidator(limits: limits).validate(bytes)
    var unpacked = msgpack_unpacked()
    msgpack_unpacked_init(&unpacked)
    defer { msgpack_unpacked_destroy(&unpacked) }
    var offset = 0
    let status = bytes.withMemoryRebound(to: CChar.self) { chars in
        msgpack_unpack_next(&unpacked, chars.baseAddress, chars.count, &offset)
    }
    guard status == MSGPACK_UNPACK_SUCCESS else { throw WireError.unpackerFailed(code: status.rawValue) }
    return try body(unpacked.data)
}

extension msgpack_object {
    /// The MessagePack type name, as errors report it.
    var typeName: String {
        switch type {
        case MSGPACK_OBJECT_NIL: return "nil"
        case MSGPACK_OBJECT_BOOLEAN: return "bool"
        case MSGPACK_OBJECT_POSITIVE_INTEGER, MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int"
        case MSGPACK_OBJECT_FLOAT32: return "float32"
        case MSGPACK_OBJECT_FLOAT64: return "float64"
        case MSGPACK_OBJECT_STR: return "str"
        case MSGPACK_OBJECT_BIN: return "bin"
        case MSGPACK_OBJECT_ARRAY: return "array"
        case MSGPACK_OBJECT_MAP: return "map"
        case MSGPACK_OBJECT_EXT: return "ext"
        default: return "unknown"
        }
    }

    /// The bytes of a str, bin or ext payload.
    var payloadBytes: UnsafeRawBufferPointer {
        switch type {
        case MSGPACK_OBJECT_STR: return UnsafeRawBufferPointer(start: via.str.ptr, count: Int(via.str.size))
        case MSGPACK_OBJECT_BIN: return UnsafeRawBufferPointer(start: via.bin.ptr, count: Int(via.bin.size))
        case MSGPACK_OBJECT_EXT: return UnsafeRawBufferPointer(start: via.ext.ptr, count: Int(via.ext.size))
        default: return UnsafeRawBufferPointer(start: nil, count: 0)
        }
    }

    /// The elements of an array (empty for anything else).
    var arrayElements: UnsafeBufferPointer<msgpack_object> {
        guard type == MSGPACK_OBJECT_ARRAY else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: via.array.ptr, count: Int(via.array.size))
    }

    /// The entries of a map (empty for anything else).
    var mapEntries: UnsafeBufferPointer<msgpack_object_kv> {
        guard type == MSGPACK_OBJECT_MAP else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: via.map.ptr, count: Int(via.map.size))
    }

    /// Whether this is a str whose bytes equal `key`'s UTF-8.
    func isString(equalTo key: UnsafeBufferPointer<UInt8>) -> Bool {
        guard type == MSGPACK_OBJECT_STR, Int(via.str.size) == key.count else { return false }
        guard let ptr = via.str.ptr, let keyBase = key.baseAddress else { return key.isEmpty }
        return memcmp(ptr, keyBase, key.count) == 0
    }

    /// The string, or `nil` when this is not a valid UTF-8 str.
    var validatedString: String? {
        guard type == MSGPACK_OBJECT_STR else { return nil }
        let utf8 = payloadBytes.assumingMemoryBound(to: UInt8.self)
        // `String(decoding:as:)` is the specialized fast path, but it repairs bad input with
        // U+FFFD; a repair changes the bytes, so comparing with the input tells valid from invalid.
        let string = String(decoding: utf8, as: UTF8.self)
        var copy = string
        let unchanged = copy.withUTF8 { decoded in
            decoded.count == utf8.count && (utf8.isEmpty || memcmp(decoded.baseAddress!, utf8.baseAddress!, utf8.count) == 0)
        }
        return unchanged ? string : nil
    }

    /// Copies this object and everything below it into a ``MessagePackValue``.
    /// - Parameter path: Where this object sits, for the error should a string in it not be UTF-8.
    func value(path: @autoclosure () -> String) throws(WireError) -> MessagePackValue {
        guard let value = copiedValue() else {
            throw .invalidUTF8(path: invalidStringPath(below: path()) ?? path())
        }
        return value
    }

    /// The copy, or `nil` when a string below is not UTF-8. Paths are left out to keep the
    /// common case cheap; ``invalidStringPath(below:)`` finds the culprit afterwards.
    private func copiedValue() -> MessagePackValue? {
        switch type {
        case MSGPACK_OBJECT_NIL: return .nil
        case MSGPACK_OBJECT_BOOLEAN: return .bool(via.boolean)
        case MSGPACK_OBJECT_POSITIVE_INTEGER: return .uint(via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return .int(via.i64)
        case MSGPACK_OBJECT_FLOAT32: return .float(Float(via.f64))
        case MSGPACK_OBJECT_FLOAT64: return .double(via.f64)
        case MSGPACK_OBJECT_STR: return validatedString.map(MessagePackValue.string)
        case MSGPACK_OBJECT_BIN: return .binary([UInt8](payloadBytes))
        case MSGPACK_OBJECT_EXT: return .ext(type: via.ext.type, data: [UInt8](payloadBytes))
        case MSGPACK_OBJECT_ARRAY:
            var elements: [MessagePackValue] = []
            elements.reserveCapacity(Int(via.array.size))
            for element in arrayElements {
                guard let value = element.copiedValue() else { return nil }
                elements.append(value)
            }
            return .array(elements)
        case MSGPACK_OBJECT_MAP:
            var entries: [(key: MessagePackValue, value: MessagePackValue)] = []
            entries.reserveCapacity(Int(via.map.size))
            for entry in mapEntries {
                guard let key = entry.key.copiedValue(), let value = entry.val.copiedValue() else { return nil }
                entries.append((key, value))
            }
            return .map(entries)
        default:
            return nil
        }
    }

    /// The path of the first string at or below this object that is not UTF-8.
    private func invalidStringPath(below path: String) -> String? {
        switch type {
        case MSGPACK_OBJECT_STR:
            return validatedString == nil ? path : nil
        case MSGPACK_OBJECT_ARRAY:
            for (index, element) in arrayElements.enumerated() {
                if let found = element.invalidStringPath(below: "\(path)[\(index)]") { return found }
            }
            return nil
        case MSGPACK_OBJECT_MAP:
            for entry in mapEntries {
                if let found = entry.key.invalidStringPath(below: path) { return found }
                let name = entry.key.validatedString ?? entry.key.typeName
                if let found = entry.val.invalidStringPath(below: path.isEmpty ? name : "\(path).\(name)") {
                    return found
                }
            }
            return nil
        default:
            return nil
        }
    }
}

/// Scalar reads: each checks the MessagePack type and range, and names `path` in its error.
extension msgpack_object {
    func mismatch(_ expected: String, _ path: () -> String) -> WireError {
        .typeMismatch(expected: expected, found: typeName, path: path())
    }

    func bool(_ path: () -> String) throws(WireError) -> Bool {
        guard type == MSGPACK_OBJECT_BOOLEAN else { throw mismatch("bool", path) }
        return via.boolean
    }

    func string(_ path: () -> String) throws(WireError) -> String {
        guard type == MSGPACK_OBJECT_STR else { throw mismatch("str", path) }
        guard let string = validatedString else { throw .invalidUTF8(path: path()) }
        return string
    }

    func bytes(_ path: () -> String) throws(WireError) -> [UInt8] {
        guard type == MSGPACK_OBJECT_BIN else { throw mismatch("bin", path) }
        return [UInt8](payloadBytes)
    }

    func integer<T: FixedWidthInteger>(_: T.Type, _ path: () -> String) throws(WireError) -> T {
        let value: T?
        switch type {
        case MSGPACK_OBJECT_POSITIVE_INTEGER: value = T(exactly: via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: value = T(exactly: via.i64)
        default: throw mismatch("int", path)
        }
        guard let value else { throw .invalidValue("integer does not fit \(T.self)", path: path()) }
        return value
    }

    /// A float, or an integer read as a float.
    func double(_ path: () -> String) throws(WireError) -> Double {
        switch type {
        case MSGPACK_OBJECT_FLOAT32, MSGPACK_OBJECT_FLOAT64: return via.f64
        case MSGPACK_OBJECT_POSITIVE_INTEGER: return Double(via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return Double(via.i64)
        default: throw mismatch("float", path)
        }
    }
}
