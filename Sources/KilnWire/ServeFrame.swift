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
/// Before its first answer a runtime may send ``ServeProtocol/readyBody`` (`{ready: true}`) once,
/// when it has finished starting: a VM with warm runtimes waits for it before it first greets its
/// host, so that a snapshot template holds them idle rather than half-started (every clone would
/// otherwise finish their start-up again).
///
/// An answer with a non-nil `error` is a failed call (the runtime stays up); an answer with another
/// `id`, a frame that is not such a map, or EOF breaks the protocol, and the agent kills the
/// runtime's process group and starts it again at the next call. The codec here is Codable-free:
/// the agent uses it, and under TCG every code path it first runs after a restore is costly.
public enum ServeProtocol {
    /// The environment variable that tells a method program how it was started: `serve`, or
    /// absent (exec mode: one request on stdin, one answer on stdout).
    public static let modeVariable = "KILN_MODE"

    /// The body of the frame a runtime sends once it is ready for calls: `{ready: true}`.
    public static let readyBody: [UInt8] = [0x81, 0xa5] + Array("ready".utf8) + [0xc3]
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
    /// - Parameter framed: put the frame's length prefix in front (saves a copy).
    public static func body(payload: [UInt8], id: String, deadlineMs: UInt64, framed: Bool = false) throws(WireError) -> [UInt8] {
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
        body.reserveCapacity(FrameBuffer.prefixBytes + payload.count + id.utf8.count + 32)
        if framed { body += [0, 0, 0, 0] }
        MessagePackBytes.appendMapHeader(count: count + 2, to: &body)
        if payload.isEmpty {
            body += MessagePackBytes.argsKey
            body.append(0xc0)
        } else {
            body += payload[headerBytes...]
        }
        body += MessagePackBytes.idKey
        MessagePackBytes.appendString(id, to: &body)
        body += MessagePackBytes.deadlineKey
        MessagePackBytes.appendUInt(deadlineMs, to: &body)
        if framed {
            let length = UInt32(truncatingIfNeeded: body.count - FrameBuffer.prefixBytes)
            for index in 0..<4 { body[index] = UInt8(length >> (24 - 8 * index) & 0xff) }
        }
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
        let fields = try ServeFrameScanner.scan(body, limits: limits)
        guard let id = fields.id else { throw .missingKey("id", path: "") }
        self.id = id
        self.error = fields.error
        let outputRange = fields.output
        let contextRange = fields.context.flatMap { body[$0] == [0xc0] ? nil : $0 }
        var output: [UInt8] = []
        output.reserveCapacity((outputRange?.count ?? 1) + (contextRange?.count ?? 0) + 16)
        MessagePackBytes.appendMapHeader(count: contextRange == nil ? 1 : 2, to: &output)
        output += MessagePackBytes.outputKey
        if let outputRange { output += body[outputRange] } else { output.append(0xc0) }
        if let contextRange {
            output += MessagePackBytes.contextKey
            output += body[contextRange]
        }
        self.methodOutput = output
    }

}

/// A call read without building values: its id and deadline, and where its `args` and `context`
/// are. The SDK's fast path: only `args` is decoded, as the method's own input type.
public struct ServeCallFields: Sendable, Equatable {
    public let id: String
    public let deadlineMs: UInt64
    /// The encoded `args` (nil when absent).
    public let args: ArraySlice<UInt8>
    /// The encoded `context`, when the call has a non-nil one.
    public let context: ArraySlice<UInt8>?

    /// Reads a call's frame body.
    public init(body: [UInt8], limits: WireLimits = .default) throws(WireError) {
        let fields = try ServeFrameScanner.scan(body, limits: limits)
        guard let id = fields.id else { throw .missingKey("id", path: "") }
        guard let deadline = fields.deadlineMs else { throw .missingKey("deadline_ms", path: "") }
        self.id = id
        self.deadlineMs = deadline
        self.args = fields.args.map { body[$0] } ?? [0xc0]
        self.context = fields.context.flatMap { body[$0] == [0xc0] ? nil : body[$0] }
    }
}

/// Builds a runtime's answer frame body from already-encoded `output` and `context`.
public enum ServeAnswerBody {
    /// `{id, output, context?}` with `output` and `context` given as MessagePack bytes.
    public static func make(id: String, output: [UInt8], context: [UInt8]?) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(output.count + (context?.count ?? 0) + id.utf8.count + 24)
        MessagePackBytes.appendMapHeader(count: context == nil ? 2 : 3, to: &body)
        body += MessagePackBytes.idKey
        MessagePackBytes.appendString(id, to: &body)
        body += MessagePackBytes.outputKey
        body += output
        if let context {
            body += MessagePackBytes.contextKey
            body += context
        }
        return body
    }
}

/// Reads the top-level entries of a serve-mode frame body (a map with string keys) without
/// building values: `id`, `error` and `deadline_ms` decoded, every other value as a byte range.
/// The whole body is checked against the wire limits on the way.
enum ServeFrameScanner {
    struct Fields {
        var id: String?
        var error: String?
        var deadlineMs: UInt64?
        /// Where the values of `args`, `context` and `output` are.
        var args: Range<Int>?
        var context: Range<Int>?
        var output: Range<Int>?
    }

    static func scan(_ body: [UInt8], limits: WireLimits) throws(WireError) -> Fields {
        do {
            return try body.withUnsafeBytes { bytes in try scan(bytes, limits: limits) }
        } catch let error as WireError {
            throw error
        } catch {
            throw .invalidValue("\(error)", path: "")
        }
    }

    private static func scan(_ bytes: UnsafeRawBufferPointer, limits: WireLimits) throws(WireError) -> Fields {
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
        var fields = Fields()
        for _ in 0..<count {
            let keyStart = position
            position = try validator.endOfValue(in: bytes, at: position)
            let key = Key(bytes[keyStart..<position])
            let valueStart = position
            position = try validator.endOfValue(in: bytes, at: position)
            let value = valueStart..<position
            switch key {
            case .id:
                guard let text = string(bytes, value) else { throw mismatch("str", bytes[valueStart], "id") }
                fields.id = text
            case .error:
                if bytes[valueStart] != 0xc0 {
                    guard let text = string(bytes, value) else { throw mismatch("str", bytes[valueStart], "error") }
                    fields.error = text
                }
            case .deadlineMs:
                guard let number = unsigned(bytes, value) else { throw mismatch("uint", bytes[valueStart], "deadline_ms") }
                fields.deadlineMs = number
            case .args: fields.args = value
            case .context: fields.context = value
            case .output: fields.output = value
            case .other: break
            }
        }
        guard position == bytes.count else { throw .trailingBytes(count: bytes.count - position, offset: position) }
        return fields
    }

    /// The keys the scanner reads, told apart by their encoded bytes (a fixstr each).
    private enum Key {
        case id, error, deadlineMs, args, context, output, other

        init(_ encoded: Slice<UnsafeRawBufferPointer>) {
            switch encoded.count {
            case 3 where encoded.elementsEqual(MessagePackBytes.idKey): self = .id
            case 5 where encoded.elementsEqual(MessagePackBytes.argsKey): self = .args
            case 6 where encoded.elementsEqual(MessagePackBytes.errorKey): self = .error
            case 7 where encoded.elementsEqual(MessagePackBytes.outputKey): self = .output
            case 8 where encoded.elementsEqual(MessagePackBytes.contextKey): self = .context
            case 12 where encoded.elementsEqual(MessagePackBytes.deadlineKey): self = .deadlineMs
            default: self = .other
            }
        }
    }

    private static func mismatch(_ expected: String, _ marker: UInt8, _ key: String) -> WireError {
        .typeMismatch(expected: expected, found: "0x" + String(marker, radix: 16), path: key)
    }

    /// The string at `range` when it holds one (any of the str encodings).
    private static func string(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String? {
        let header: Int
        switch bytes[range.lowerBound] {
        case 0xa0...0xbf: header = 1
        case 0xd9: header = 2
        case 0xda: header = 3
        case 0xdb: header = 5
        default: return nil
        }
        let text = UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound + header)..<range.upperBound])
        // ASCII (every id Kiln makes) needs no decoding beyond a copy; anything else is validated.
        if text.allSatisfy({ $0 < 0x80 }) { return String(decoding: text, as: UTF8.self) }
        return String(validating: text, as: UTF8.self)
    }

    /// The non-negative integer at `range` when it holds one.
    private static func unsigned(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> UInt64? {
        let marker = bytes[range.lowerBound]
        switch marker {
        case 0x00...0x7f: return UInt64(marker)
        case 0xcc...0xcf, 0xd0...0xd3:
            let payload = bytes[(range.lowerBound + 1)..<range.upperBound]
            let raw = payload.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            if marker >= 0xd0 && payload.first.map({ $0 & 0x80 != 0 }) == true { return nil }  // negative
            return raw
        default: return nil
        }
    }
}
