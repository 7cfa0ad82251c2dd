/// Serve mode: the frames between `kiln-agent` and a method runtime that stays up. The agent
/// starts the runtime once (with ``ServeProtocol/modeVariable`` set to `serve`) and writes one
/// ``ServeCall`` per invocation to its stdin; the runtime answers each with a ``ServeAnswer`` on its
/// stdout. Both are MessagePack maps in the guest channel's framing (a 4-byte big-endian length,
/// then the body; see ``FrameBuffer``):
///
/// ```
/// agent → runtime   {id: str, args: any, context: map?, deadline_ms: uint}
/// runtime → agent   {id: str, output: any, context: map?, error: str?}
/// ```
///
/// An answer with a non-nil `error` is a failed call (the runtime stays up); an answer with another
/// `id`, a frame that is not such a map, or EOF breaks the protocol, and the agent kills the
/// runtime's process group and starts it again at the next call. The codec here is Codable-free:
/// the agent uses it, and under TCG every code path it first runs after a restore is costly.
public enum ServeProtocol {
    /// The environment variable that tells a method program how it was started: `serve`, or
    /// absent (exec mode: one request on stdin, one answer on stdout).
    public static let modeVariable = "KILN_MODE"
}

/// One invocation, from the agent to a serve-mode runtime.
public struct ServeCall: Sendable, Equatable {
    public var id: String
    public var args: MessagePackValue
    /// The execution context (`{locals?, state?}`), when the invocation carried one.
    public var context: MessagePackValue?
    /// Relative deadline; the agent kills the runtime when it passes.
    public var deadlineMs: UInt64

    public init(id: String, args: MessagePackValue, context: MessagePackValue? = nil, deadlineMs: UInt64) {
        self.id = id
        self.args = args
        self.context = context
        self.deadlineMs = deadlineMs
    }

    /// Decodes a call's frame body.
    public init(body: [UInt8], decoder: MessagePackDecoder = MessagePackDecoder()) throws(WireError) {
        let value = try decoder.decodeValue(from: body)
        guard case .map = value else { throw .typeMismatch(expected: "map", found: value.typeName, path: "") }
        guard case .string(let id)? = value["id"] else { throw .missingKey("id", path: "") }
        guard let deadline = value["deadline_ms"]?.uint64Value else { throw .missingKey("deadline_ms", path: "") }
        let context = value["context"]
        self.init(id: id, args: value["args"] ?? .nil, context: context == .nil ? nil : context, deadlineMs: deadline)
    }

    /// This call as a frame body.
    public func body(encoder: MessagePackEncoder = MessagePackEncoder()) throws(WireError) -> [UInt8] {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "id", value: .string(id)), (key: "args", value: args)]
        if let context { entries.append((key: "context", value: context)) }
        entries.append((key: "deadline_ms", value: .uint(deadlineMs)))
        return try encoder.encode(.map(entries))
    }

    /// The body of a call made from an exec payload — the map `{args, context?}` an exec-mode
    /// program reads on stdin — without decoding it: the map's header grows by two and `id` and
    /// `deadline_ms` follow its entries. An empty payload is a call with nil args.
    /// - Throws: ``WireError/typeMismatch(expected:found:path:)`` when the payload is not a map.
    public static func body(payload: [UInt8], id: String, deadlineMs: UInt64) throws(WireError) -> [UInt8] {
        let count: Int
        let headerBytes: Int
        switch payload.first {
        case nil:
            count = 1
            headerBytes = 0
        case let first? where first & 0xf0 == 0x80:
            count = Int(first & 0x0f)
            headerBytes = 1
        case 0xde? where payload.count >= 3:
            count = Int(payload[1]) << 8 | Int(payload[2])
            headerBytes = 3
        case 0xdf? where payload.count >= 5:
            count = payload[1...4].reduce(0) { $0 << 8 | Int($1) }
            headerBytes = 5
        case let first?:
            throw .typeMismatch(expected: "map", found: "0x" + String(first, radix: 16), path: "payload")
        }
        var body: [UInt8] = []
        body.reserveCapacity(payload.count + id.utf8.count + 32)
        MessagePackBytes.appendMapHeader(count: count + 2, to: &body)
        if payload.isEmpty {
            body += [0xa4] + Array("args".utf8) + [0xc0]
        } else {
            body += payload[headerBytes...]
        }
        body += [0xa2] + Array("id".utf8)
        MessagePackBytes.appendString(id, to: &body)
        body += [0xab] + Array("deadline_ms".utf8)
        MessagePackBytes.appendUInt(deadlineMs, to: &body)
        return body
    }
}

/// A runtime's answer to one ``ServeCall``.
public struct ServeAnswer: Sendable, Equatable {
    /// The call's id.
    public var id: String
    /// The method's return value (nil when it failed).
    public var output: MessagePackValue
    /// The context as the method left it.
    public var context: MessagePackValue?
    /// Why the call failed; the runtime stays up.
    public var error: String?

    public init(id: String, output: MessagePackValue = .nil, context: MessagePackValue? = nil, error: String? = nil) {
        self.id = id
        self.output = output
        self.context = context
        self.error = error
    }

    /// Decodes an answer's frame body.
    public init(body: [UInt8], decoder: MessagePackDecoder = MessagePackDecoder()) throws(WireError) {
        let value = try decoder.decodeValue(from: body)
        guard case .map = value else { throw .typeMismatch(expected: "map", found: value.typeName, path: "") }
        guard case .string(let id)? = value["id"] else { throw .missingKey("id", path: "") }
        let context = value["context"]
        let error: String?
        switch value["error"] ?? .nil {
        case .nil: error = nil
        case .string(let message): error = message
        case let other: throw .typeMismatch(expected: "str", found: other.typeName, path: "error")
        }
        self.init(id: id, output: value["output"] ?? .nil, context: context == .nil ? nil : context, error: error)
    }

    /// This answer as a frame body.
    public func body(encoder: MessagePackEncoder = MessagePackEncoder()) throws(WireError) -> [UInt8] {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "id", value: .string(id)), (key: "output", value: output)]
        if let context { entries.append((key: "context", value: context)) }
        if let error { entries.append((key: "error", value: .string(error))) }
        return try encoder.encode(.map(entries))
    }

    /// `{output, context?}`: what an exec-mode program writes on stdout, and what the agent
    /// returns to the host as the result's `output` bytes.
    public func methodOutput(encoder: MessagePackEncoder = MessagePackEncoder()) throws(WireError) -> [UInt8] {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "output", value: output)]
        if let context { entries.append((key: "context", value: context)) }
        return try encoder.encode(.map(entries))
    }
}

/// A runtime's answer read without building values: its id and error, and `{output, context?}`
/// made of the answer's own bytes for both. The agent's fast path: the answer is checked against
/// the wire limits and then passed on, not decoded and encoded again.
public struct ServeAnswerFields: Sendable, Equatable {
    /// The call's id.
    public let id: String
    /// Why the call failed, when it did.
    public let error: String?
    /// `{output, context?}`: what the host gets as the result's output.
    public let methodOutput: [UInt8]

    /// Reads an answer's frame body.
    public init(body: [UInt8], limits: WireLimits = .default) throws(WireError) {
        let parsed: Parsed
        do {
            parsed = try body.withUnsafeBytes { bytes in try Self.parse(bytes, limits: limits) }
        } catch let error as WireError {
            throw error
        } catch {
            throw .invalidValue("\(error)", path: "")
        }
        guard let id = parsed.id else { throw .missingKey("id", path: "") }
        self.id = id
        self.error = parsed.error
        var output: [UInt8] = []
        output.reserveCapacity((parsed.output?.count ?? 1) + (parsed.context?.count ?? 0) + 16)
        MessagePackBytes.appendMapHeader(count: parsed.context == nil ? 1 : 2, to: &output)
        output += [0xa6] + Array("output".utf8)
        if let range = parsed.output { output += body[range] } else { output.append(0xc0) }
        if let range = parsed.context {
            output += [0xa7] + Array("context".utf8)
            output += body[range]
        }
        self.methodOutput = output
    }

    /// Where an answer's fields are.
    private struct Parsed {
        var id: String?
        var error: String?
        var output: Range<Int>?
        var context: Range<Int>?
    }

    private static func parse(_ bytes: UnsafeRawBufferPointer, limits: WireLimits) throws(WireError) -> Parsed {
        let validator = MessagePackValidator(limits: limits)
        guard bytes.count <= limits.maxBodyBytes else {
            throw .limitExceeded(.bodyBytes, actual: bytes.count, maximum: limits.maxBodyBytes, offset: 0)
        }
        guard let first = bytes.first else { throw .truncated(offset: 0) }
        var position: Int
        let count: Int
        switch first {
        case 0x80...0x8f:
            count = Int(first & 0x0f)
            position = 1
        case 0xde, 0xdf:
            let width = first == 0xde ? 2 : 4
            guard bytes.count > width else { throw .truncated(offset: 0) }
            count = (1...width).reduce(0) { $0 << 8 | Int(bytes[$1]) }
            position = 1 + width
        default:
            throw .typeMismatch(expected: "map", found: "0x" + String(first, radix: 16), path: "")
        }
        var id: String?
        var error: String?
        var output: Range<Int>?
        var context: Range<Int>?
        for _ in 0..<count {
            let keyStart = position
            position = try validator.endOfValue(in: bytes, at: position)
            let key = Self.string(bytes, keyStart..<position)
            let valueStart = position
            position = try validator.endOfValue(in: bytes, at: position)
            let value = valueStart..<position
            switch key {
            case "id":
                guard let text = Self.string(bytes, value) else {
                    throw .typeMismatch(expected: "str", found: "0x" + String(bytes[valueStart], radix: 16), path: "id")
                }
                id = text
            case "error":
                if bytes[valueStart] != 0xc0 {
                    guard let text = Self.string(bytes, value) else {
                        throw .typeMismatch(expected: "str", found: "0x" + String(bytes[valueStart], radix: 16), path: "error")
                    }
                    error = text
                }
            case "output": output = value
            case "context": context = bytes[valueStart] == 0xc0 ? nil : value
            default: break
            }
        }
        guard position == bytes.count else { throw .trailingBytes(count: bytes.count - position, offset: position) }
        return Parsed(id: id, error: error, output: output, context: context)
    }

    /// The string at `range` when it holds one (any of the str encodings).
    private static func string(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String? {
        let marker = bytes[range.lowerBound]
        let header: Int
        switch marker {
        case 0xa0...0xbf: header = 1
        case 0xd9: header = 2
        case 0xda: header = 3
        case 0xdb: header = 5
        default: return nil
        }
        return String(validating: UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound + header)..<range.upperBound]), as: UTF8.self)
    }
}
