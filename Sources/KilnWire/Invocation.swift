/// A request to run a method: the body producers publish to `kiln.invoke` with the method name
/// as routing key.
public struct Invocation: Codable, Sendable, Equatable {
    /// The wire version, `v`.
    public var version: WireVersion
    /// Unique id. The AMQP `message_id` stands in when the body has none; see ``decode(body:messageID:decoder:)``.
    public var id: String
    /// The method to run, as named in the worker's manifest.
    public var method: String
    /// The method's input parameters.
    public var args: MessagePackValue
    /// The execution context carried into the method and back out.
    public var context: ExecutionContext?
    /// Relative deadline in milliseconds; the manifest's default applies when absent.
    public var deadlineMs: UInt64?
    /// Resources the method asks for.
    public var resources: ResourceRequest?
    /// Placement affinity: invocations with the same key prefer the same VM.
    public var affinity: Affinity?
    /// W3C trace context of the producer.
    public var trace: TraceContext?
    /// The producer's unix time when it submitted, in microseconds.
    public var submittedAtUs: UInt64?

    /// Creates an invocation.
    public init(
        id: String,
        method: String,
        args: MessagePackValue = .nil,
        context: ExecutionContext? = nil,
        deadlineMs: UInt64? = nil,
        resources: ResourceRequest? = nil,
        affinity: Affinity? = nil,
        trace: TraceContext? = nil,
        submittedAtUs: UInt64? = nil
    ) {
        self.version = .v1
        self.id = id
        self.method = method
        self.args = args
        self.context = context
        self.deadlineMs = deadlineMs
        self.resources = resources
        self.affinity = affinity
        self.trace = trace
        self.submittedAtUs = submittedAtUs
    }

    enum CodingKeys: String, CodingKey {
        case version = "v"
        case id, method, args, context
        case deadlineMs = "deadline_ms"
        case resources, affinity, trace
        case submittedAtUs = "submitted_at_us"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        version = try container.decode(WireVersion.self, forKey: .version)
        id = try container.decodeIfPresent(String.self, forKey: .id) ?? ""
        method = try container.decode(String.self, forKey: .method)
        args = try container.decodeIfPresent(MessagePackValue.self, forKey: .args) ?? .nil
        context = try container.decodeIfPresent(ExecutionContext.self, forKey: .context)
        deadlineMs = try container.decodeIfPresent(UInt64.self, forKey: .deadlineMs)
        resources = try container.decodeIfPresent(ResourceRequest.self, forKey: .resources)
        affinity = try container.decodeIfPresent(Affinity.self, forKey: .affinity)
        trace = try container.decodeIfPresent(TraceContext.self, forKey: .trace)
        submittedAtUs = try container.decodeIfPresent(UInt64.self, forKey: .submittedAtUs)
    }

    /// Decodes an invocation body, taking its id from the AMQP `message_id` when the body has none.
    ///
    /// - Parameters:
    ///   - body: The delivery's body.
    ///   - messageID: The delivery's `message_id` property, if set.
    ///   - decoder: The decoder, with the worker's limits.
    /// - Throws: ``WireError``; ``WireError/missingKey(_:path:)`` for `id` when neither is present.
    public static func decode(
        body: UnsafeRawBufferPointer,
        messageID: String?,
        decoder: MessagePackDecoder = MessagePackDecoder()
    ) throws(WireError) -> Invocation {
        var invocation = try decoder.decode(Invocation.self, from: body)
        if invocation.id.isEmpty {
            guard let messageID, !messageID.isEmpty else { throw .missingKey("id", path: "") }
            invocation.id = messageID
        }
        guard isMethodName(invocation.method) else {
            throw .invalidValue("method must be 1–\(maxMethodBytes) letters, digits, '-', '_' or '.' (as a manifest names it)", path: "method")
        }
        guard invocation.id.utf8.count <= maxIDBytes, !invocation.id.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw .invalidValue("id must be at most \(maxIDBytes) bytes without control characters (results carry it as their message_id)", path: "id")
        }
        return invocation
    }

    /// The longest method name: a manifest's names are at most this long.
    public static let maxMethodBytes = 64
    /// The longest id: results carry it as their AMQP `message_id`, a short string.
    public static let maxIDBytes = 255

    /// Whether `name` can name a method: 1–64 ASCII letters, digits, `-`, `_` or `.`, as a
    /// manifest requires. Anything else cannot be in a manifest, nor make a result's routing key.
    public static func isMethodName(_ name: String) -> Bool {
        isPlainName(name, maxBytes: maxMethodBytes)
    }

    /// Whether `name` is 1–`maxBytes` ASCII letters, digits, `-`, `_` or `.`: safe in a routing
    /// key, a metric label, a log line and a history record.
    public static func isPlainName(_ name: String, maxBytes: Int) -> Bool {
        let bytes = name.utf8
        return (1...max(1, maxBytes)).contains(bytes.count) && bytes.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == 0x5f || byte == 0x2d || byte == 0x2e
        }
    }
}

/// The execution context: what a method carries from one invocation to the next.
public struct ExecutionContext: Codable, Sendable, Equatable {
    /// Named values the method keeps.
    public var locals: [String: MessagePackValue]?
    /// Opaque state the method keeps.
    public var state: [UInt8]?

    /// Creates a context.
    public init(locals: [String: MessagePackValue]? = nil, state: [UInt8]? = nil) {
        self.locals = locals
        self.state = state
    }
}

/// The resources an invocation asks for.
public struct ResourceRequest: Codable, Sendable, Equatable {
    /// Virtual CPUs.
    public var vcpus: UInt32?
    /// Memory in MiB.
    public var memoryMB: UInt32?

    /// Creates a request.
    public init(vcpus: UInt32? = nil, memoryMB: UInt32? = nil) {
        self.vcpus = vcpus
        self.memoryMB = memoryMB
    }

    enum CodingKeys: String, CodingKey {
        case vcpus
        case memoryMB = "memory_mb"
    }
}

/// Placement affinity.
public struct Affinity: Codable, Sendable, Equatable {
    /// Invocations with the same key prefer the VM that ran the last one.
    public var key: String?

    /// Creates an affinity.
    public init(key: String? = nil) {
        self.key = key
    }
}

/// W3C trace context.
public struct TraceContext: Codable, Sendable, Equatable {
    /// The `traceparent` header value.
    public var traceparent: String?

    /// Creates a trace context.
    public init(traceparent: String? = nil) {
        self.traceparent = traceparent
    }
}
