/// Exchanges, queues and bindings to declare. Declaring is idempotent: the connection declares
/// its topologies again after every reconnect.
public struct AMQPTopology: Sendable, Equatable {
    public enum ExchangeType: String, Sendable {
        case direct, fanout, topic, headers
    }

    public struct Exchange: Sendable, Equatable {
        public var name: String
        public var type: ExchangeType
        public var durable: Bool
        public var autoDelete: Bool
        public var arguments: [String: AMQPFieldValue]
        /// Only check that the exchange exists (a 404 `channelClosed` when it does not), creating
        /// nothing: what a producer does, which must not invent a topology of its own.
        public var passive: Bool

        public init(
            name: String, type: ExchangeType, durable: Bool = true, autoDelete: Bool = false,
            arguments: [String: AMQPFieldValue] = [:], passive: Bool = false
        ) {
            self.name = name
            self.type = type
            self.durable = durable
            self.autoDelete = autoDelete
            self.arguments = arguments
            self.passive = passive
        }

        /// A check that `name` exists.
        public static func existing(_ name: String) -> Exchange {
            Exchange(name: name, type: .topic, passive: true)
        }
    }

    public struct Queue: Sendable, Equatable {
        public var name: String
        public var durable: Bool
        public var exclusive: Bool
        public var autoDelete: Bool
        public var arguments: [String: AMQPFieldValue]

        public init(
            name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
            arguments: [String: AMQPFieldValue] = [:]
        ) {
            self.name = name
            self.durable = durable
            self.exclusive = exclusive
            self.autoDelete = autoDelete
            self.arguments = arguments
        }
    }

    public struct Binding: Sendable, Equatable {
        public var queue: String
        public var exchange: String
        public var routingKey: String
        public var arguments: [String: AMQPFieldValue]

        public init(queue: String, exchange: String, routingKey: String, arguments: [String: AMQPFieldValue] = [:]) {
            self.queue = queue
            self.exchange = exchange
            self.routingKey = routingKey
            self.arguments = arguments
        }
    }

    public var exchanges: [Exchange]
    public var queues: [Queue]
    public var bindings: [Binding]

    /// Creates a topology; exchanges are declared first, then queues, then bindings.
    public init(exchanges: [Exchange] = [], queues: [Queue] = [], bindings: [Binding] = []) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
    }
}

/// The names of Kiln's v1 topology (DESIGN.md). Every name starts with `prefix`, `kiln` in
/// production; tests use their own prefix so that they do not share queues.
public struct KilnNames: Sendable, Equatable {
    public let prefix: String

    public init(prefix: String = "kiln") {
        self.prefix = prefix
    }

    /// Topic exchange producers publish invocations to, with the method as routing key.
    public var invokeExchange: String { "\(prefix).invoke" }
    /// The quorum queue workers consume invocations from.
    public var invocationsQueue: String { "\(prefix).invocations" }
    /// Topic exchange for results, routing key `<method>.<status>`.
    public var resultsExchange: String { "\(prefix).results" }
    /// Topic exchange for telemetry events, routing key `<kind>.<host>`.
    public var telemetryExchange: String { "\(prefix).telemetry" }
    /// The stream that keeps every worker's `host.sample` events for an hour: what `kiln fleet
    /// status` reads back, so that it knows workers that stopped reporting before it started.
    public var fleetStream: String { "\(prefix).fleet" }
    /// Fanout exchange (and its queue) for messages Kiln could not take.
    public var deadExchange: String { "\(prefix).dead" }
    public var deadQueue: String { "\(prefix).dead" }
    /// The header a dead-lettered message carries with the reason.
    public static let errorHeader = "x-kiln-error"
}

extension AMQPTopology {
    /// Kiln's v1 topology: the same as deploy/rabbitmq/definitions.json.
    ///
    /// - Parameters:
    ///   - names: The names to use.
    ///   - deliveryLimit: Deliveries of one invocation before the quorum queue dead-letters it,
    ///     so that a message that crashes every worker cannot loop forever.
    public static func kiln(_ names: KilnNames = KilnNames(), deliveryLimit: Int = 5) -> AMQPTopology {
        AMQPTopology(
            exchanges: [
                Exchange(name: names.invokeExchange, type: .topic),
                Exchange(name: names.resultsExchange, type: .topic),
                Exchange(name: names.telemetryExchange, type: .topic),
                Exchange(name: names.deadExchange, type: .fanout),
            ],
            queues: [
                Queue(name: names.invocationsQueue, arguments: [
                    "x-queue-type": "quorum",
                    "x-dead-letter-exchange": .string(names.deadExchange),
                    "x-delivery-limit": .int(Int64(deliveryLimit)),
                ]),
                Queue(name: names.deadQueue, arguments: ["x-queue-type": "quorum"]),
                Queue(name: names.fleetStream, arguments: fleetStreamArguments),
            ],
            bindings: [
                Binding(queue: names.invocationsQueue, exchange: names.invokeExchange, routingKey: "#"),
                Binding(queue: names.deadQueue, exchange: names.deadExchange, routingKey: ""),
                Binding(queue: names.fleetStream, exchange: names.telemetryExchange, routingKey: "host.sample.#"),
            ]
        )
    }

    /// The fleet stream's retention: an hour of samples (a worker sends one a second, ~300 bytes),
    /// in segments small enough that the hour is cut in steps of about a megabyte, and never more
    /// than 64 MB whatever the fleet's size.
    public static let fleetStreamArguments: [String: AMQPFieldValue] = [
        "x-queue-type": "stream",
        "x-max-age": "1h",
        "x-max-length-bytes": .int(64_000_000),
        "x-stream-max-segment-size-bytes": .int(1_000_000),
    ]
}
