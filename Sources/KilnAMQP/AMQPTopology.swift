/// Exchanges, queues and bindings to declare. Declaring is idempotent: the connection declares
/// its topologies again after every reconnect.
public struct AMQPTopology: Sendable, Equatable {
    public enum ExchangeType: String, Sendable {
        case direct, fanout, topic, headers
        /// The `rabbitmq_consistent_hash_exchange` plugin's: each message to one bound queue, by
        /// a hash of its routing key (or of a header), queues weighted by their binding keys.
        case consistentHash = "x-consistent-hash"
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
    /// Consistent-hash exchange of cross-host affinity: an invocation forwarded there reaches
    /// the worker queue its affinity key hashes to.
    public var affinityExchange: String { "\(prefix).affinity" }
    /// The queue of the worker on `host`, bound to ``affinityExchange``.
    public func workerQueue(host: String) -> String { "\(prefix).worker.\(host)" }
    /// The header that carries a forwarded invocation's affinity key (what the exchange hashes);
    /// an invocation that has it is never forwarded again.
    public static let affinityHeader = "x-kiln-affinity"
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

    /// Cross-host affinity for the worker on `host`: the consistent-hash exchange (hashing the
    /// affinity header, so that the routing key stays the method) and the worker's own quorum
    /// queue bound to it, whose invocations go back to the shared queue after `holdMs` without
    /// being taken (at least once: the worker may be gone), straight through the default exchange
    /// (a worker may not publish to the invoke exchange).
    public static func crossHostAffinity(_ names: KilnNames, host: String, holdMs: Int, deliveryLimit: Int = 5) -> AMQPTopology {
        let queue = names.workerQueue(host: host)
        return AMQPTopology(
            exchanges: [Exchange(name: names.affinityExchange, type: .consistentHash, arguments: ["hash-header": .string(KilnNames.affinityHeader)])],
            queues: [Queue(name: queue, arguments: [
                "x-queue-type": "quorum",
                "x-message-ttl": .int(Int64(holdMs)),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": .string(names.invocationsQueue),
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": .int(Int64(deliveryLimit)),
            ])],
            // The binding key is the queue's number of points on the hash ring: every worker the
            // same, and enough points that the shares come out near equal.
            bindings: [Binding(queue: queue, exchange: names.affinityExchange, routingKey: "100")])
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

/// What a passive declare tells of a queue.
public struct AMQPQueueState: Sendable, Equatable {
    /// Messages ready for delivery (not those delivered and unsettled).
    public var messages: Int
    public var consumers: Int

    public init(messages: Int, consumers: Int) {
        self.messages = messages
        self.consumers = consumers
    }
}
