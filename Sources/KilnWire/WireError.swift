/// Why a message could not be decoded or encoded. Each case names what was wrong and where, so
/// that it can go into a dead letter's `x-kiln-error` header as it is.
public enum WireError: Error, Sendable, Equatable {
    /// The input ended inside a value; `offset` is where the unfinished value began.
    case truncated(offset: Int)
    /// A byte that MessagePack never uses (0xc1) at `offset`.
    case invalidByte(UInt8, offset: Int)
    /// Bytes remain after the one top-level value.
    case trailingBytes(count: Int, offset: Int)
    /// The input breaks a ``WireLimits`` bound: `actual` of `maximum`, at `offset` in the input.
    case limitExceeded(WireLimit, actual: Int, maximum: Int, offset: Int)
    /// A string is not valid UTF-8.
    case invalidUTF8(path: String)
    /// Valid MessagePack of the wrong shape: `expected` at `path`, found `found`.
    case typeMismatch(expected: String, found: String, path: String)
    /// A required key is missing from a map.
    case missingKey(String, path: String)
    /// A value is out of range or not allowed, for example an unknown status.
    case invalidValue(String, path: String)
    /// The message's `v` is not one this code speaks.
    case unsupportedVersion(Int)
    /// msgpack-c reported an error it alone detected (it allocates nothing for input we rejected).
    case unpackerFailed(code: Int32)
    /// msgpack-c could not append to its output buffer.
    case packerFailed
}

extension WireError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .truncated(let offset):
            return "truncated: input ends inside the value that starts at byte \(offset)"
        case .invalidByte(let byte, let offset):
            return "invalid byte 0x\(String(byte, radix: 16)) at offset \(offset)"
        case .trailingBytes(let count, let offset):
            return "\(count) trailing bytes after the message, at offset \(offset)"
        case .limitExceeded(let limit, let actual, let maximum, let offset):
            return "\(limit) \(actual) exceeds the limit of \(maximum) (at offset \(offset))"
        case .invalidUTF8(let path):
            return "string at \(path.isEmpty ? "top level" : path) is not valid UTF-8"
        case .typeMismatch(let expected, let found, let path):
            return "expected \(expected) at \(path.isEmpty ? "top level" : path), found \(found)"
        case .missingKey(let key, let path):
            return "missing key '\(key)'\(path.isEmpty ? "" : " in \(path)")"
        case .invalidValue(let reason, let path):
            return "invalid value at \(path.isEmpty ? "top level" : path): \(reason)"
        case .unsupportedVersion(let version):
            return "unsupported wire version v=\(version); this worker speaks v=1"
        case .unpackerFailed(let code):
            return "msgpack-c unpacker failed with code \(code)"
        case .packerFailed:
            return "msgpack-c packer could not write its output"
        }
    }
}
