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
        let added = try MessagePackEncoder().encode(.map([(key: "id", value: .string(id)), (key: "deadline_ms", value: .uint(deadlineMs))]))
        guard let first = payload.first else {
            return [0x83, 0xa4] + Array("args".utf8) + [0xc0] + added.dropFirst()
        }
        let count: Int
        let headerBytes: Int
        switch first {
        case 0x80...0x8f:
            count = Int(first & 0x0f)
            headerBytes = 1
        case 0xde where payload.count >= 3:
            count = Int(payload[1]) << 8 | Int(payload[2])
            headerBytes = 3
        case 0xdf where payload.count >= 5:
            count = payload[1...4].reduce(0) { $0 << 8 | Int($1) }
            headerBytes = 5
        default:
            throw .typeMismatch(expected: "map", found: "0x" + String(first, radix: 16), path: "payload")
        }
        var body: [UInt8] = []
        body.reserveCapacity(payload.count + added.count + 4)
        let total = count + 2
        if total <= 15 {
            body.append(0x80 | UInt8(total))
        } else if total <= 0xffff {
            body += [0xde, UInt8(total >> 8), UInt8(total & 0xff)]
        } else {
            body += [0xdf, UInt8(total >> 24), UInt8(total >> 16 & 0xff), UInt8(total >> 8 & 0xff), UInt8(total & 0xff)]
        }
        body += payload[headerBytes...]
        body += added.dropFirst()  // the two entries, without their own fixmap header
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
