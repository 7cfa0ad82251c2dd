/// A value in an AMQP field table: message headers and queue arguments.
public enum AMQPFieldValue: Sendable, Equatable, Hashable {
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
    /// Seconds since the unix epoch.
    case timestamp(UInt64)
    case array([AMQPFieldValue])
    case table([String: AMQPFieldValue])
    case void

    /// The string, when this is a string (or UTF-8 bytes).
    public var stringValue: String? {
        switch self {
        case .string(let string): return string
        case .bytes(let bytes): return String(decoding: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// The integer, when this is an integer.
    /// At least the bytes the value takes in an AMQP field table.
    var encodedSizeBound: Int {
        switch self {
        case .bool, .void: return 2
        case .int, .double, .timestamp: return 9
        case .string(let text): return 5 + text.utf8.count
        case .bytes(let bytes): return 5 + bytes.count
        case .array(let values): return 5 + values.reduce(0) { $0 + $1.encodedSizeBound }
        case .table(let table): return 5 + table.reduce(0) { $0 + $1.key.utf8.count + 1 + $1.value.encodedSizeBound }
        }
    }

    public var intValue: Int64? {
        if case .int(let value) = self { return value }
        return nil
    }
}

extension AMQPFieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// The basic-class properties of a message.
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: [String: AMQPFieldValue]
    /// Persistent (2) or transient (1); `nil` leaves it to the broker (transient).
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as a decimal string.
    public var expiration: String?
    public var messageID: String?
    /// Seconds since the unix epoch.
    public var timestamp: UInt64?
    public var type: String?
    public var appID: String?

    /// Creates properties.
    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: [String: AMQPFieldValue] = [:],
        deliveryMode: UInt8? = nil, priority: UInt8? = nil, correlationID: String? = nil, replyTo: String? = nil,
        expiration: String? = nil, messageID: String? = nil, timestamp: UInt64? = nil, type: String? = nil,
        appID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.appID = appID
    }

    /// Properties of a persistent MessagePack message, as Kiln publishes them.
    public static func msgpack(
        messageID: String? = nil, correlationID: String? = nil, replyTo: String? = nil,
        headers: [String: AMQPFieldValue] = [:]
    ) -> AMQPProperties {
        AMQPProperties(
            contentType: "application/msgpack", headers: headers, deliveryMode: 2,
            correlationID: correlationID, replyTo: replyTo, messageID: messageID)
    }
}

/// A message to publish.
public struct AMQPMessage: Sendable, Equatable {
    /// The exchange; the empty string is the default exchange, which routes by queue name.
    public var exchange: String
    public var routingKey: String
    public var body: [UInt8]
    public var properties: AMQPProperties
    /// Whether an unroutable message fails the publish (``AMQPError/unroutable(exchange:routingKey:code:text:)``)
    /// instead of being dropped by the broker.
    public var mandatory: Bool

    /// Creates a message.
    public init(
        exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = AMQPProperties(),
        mandatory: Bool = false
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
    }

    /// The most bytes of an AMQP short string: exchange and queue names, routing keys, most
    /// properties, header names.
    public static let maxShortString = 255

    /// Throws ``AMQPError/invalidMessage(_:)`` when a field is longer than AMQP can carry; the
    /// message would otherwise fail to encode on the connection's thread.
    public func validate() throws(AMQPError) {
        let shortStrings: [(String, String?)] = [
            ("exchange", exchange), ("routing key", routingKey), ("content_type", properties.contentType),
            ("content_encoding", properties.contentEncoding), ("correlation_id", properties.correlationID),
            ("reply_to", properties.replyTo), ("expiration", properties.expiration), ("message_id", properties.messageID),
            ("type", properties.type), ("app_id", properties.appID),
        ]
        for (name, value) in shortStrings {
            if let value, value.utf8.count > Self.maxShortString {
                throw .invalidMessage("\(name) is \(value.utf8.count) bytes, over AMQP's \(Self.maxShortString)")
            }
        }
        for name in properties.headers.keys where name.utf8.count > Self.maxShortString {
            throw .invalidMessage("a header name is \(name.utf8.count) bytes, over AMQP's \(Self.maxShortString)")
        }
        // The properties travel in one frame; rabbitmq-c would find out only after it had sent
        // the publish method, and the broker would close the connection over the half message.
        let headerBytes = properties.headers.reduce(0) { $0 + $1.key.utf8.count + 1 + $1.value.encodedSizeBound }
        guard headerBytes <= Self.maxHeaderBytes else {
            throw .invalidMessage("the headers take about \(headerBytes) bytes, over the \(Self.maxHeaderBytes) a frame leaves them")
        }
    }

    /// The most the headers may take, encoded: well inside the 128 KiB frames RabbitMQ offers.
    public static let maxHeaderBytes = 65_536
}
