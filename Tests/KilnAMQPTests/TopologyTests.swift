import Foundation
import KilnAMQP
import Testing

/// The topology the worker declares and deploy/rabbitmq/definitions.json must not drift apart.
@Suite("Topology")
struct TopologyTests {
    struct Definitions: Decodable {
        struct Exchange: Decodable {
            let name: String
            let type: String
            let durable: Bool
            let auto_delete: Bool
        }

        struct Queue: Decodable {
            let name: String
            let durable: Bool
            let auto_delete: Bool
            let arguments: [String: Argument]
        }

        struct Binding: Decodable {
            let source: String
            let destination: String
            let destination_type: String
            let routing_key: String
        }

        let exchanges: [Exchange]
        let queues: [Queue]
        let bindings: [Binding]
    }

    enum Argument: Decodable, Equatable {
        case string(String)
        case int(Int64)

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let int = try? container.decode(Int64.self) {
                self = .int(int)
            } else {
                self = .string(try container.decode(String.self))
            }
        }

        var field: AMQPFieldValue {
            switch self {
            case .string(let string): return .string(string)
            case .int(let int): return .int(int)
            }
        }
    }

    @Test func declaredTopologyMatchesTheDefinitionsFile() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let data = try Data(contentsOf: root.appendingPathComponent("deploy/rabbitmq/definitions.json"))
        let definitions = try JSONDecoder().decode(Definitions.self, from: data)
        let topology = AMQPTopology.kiln()

        let declaredExchanges = Set(topology.exchanges.map { "\($0.name) \($0.type.rawValue) durable=\($0.durable) autoDelete=\($0.autoDelete)" })
        let definedExchanges = Set(definitions.exchanges.map { "\($0.name) \($0.type) durable=\($0.durable) autoDelete=\($0.auto_delete)" })
        #expect(declaredExchanges == definedExchanges)

        #expect(topology.queues.count == definitions.queues.count)
        for queue in topology.queues {
            let defined = try #require(definitions.queues.first { $0.name == queue.name }, "\(queue.name) is not in definitions.json")
            #expect(defined.durable == queue.durable)
            #expect(defined.auto_delete == queue.autoDelete)
            #expect(defined.arguments.mapValues(\.field) == queue.arguments, "arguments of \(queue.name)")
        }

        let declaredBindings = Set(topology.bindings.map { "\($0.exchange) -> \($0.queue) [\($0.routingKey)]" })
        let definedBindings = Set(definitions.bindings.map { "\($0.source) -> \($0.destination) [\($0.routing_key)]" })
        #expect(declaredBindings == definedBindings)
        #expect(definitions.bindings.allSatisfy { $0.destination_type == "queue" })
    }

    @Test func declaringTwiceIsHarmless() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("declare-twice")
        try await connection.declare(.kiln(names))
        try await connection.declare(.kiln(names))
        // A conflicting redeclaration is the broker's 406, as a typed error.
        var conflicting = AMQPTopology.kiln(names, deliveryLimit: 9)
        conflicting.exchanges = []
        conflicting.bindings = []
        do {
            try await connection.declare(conflicting)
            Issue.record("redeclaring a queue with other arguments succeeded")
        } catch let error as AMQPError {
            guard case .channelClosed(406, let text) = error else {
                Issue.record("expected 406 PRECONDITION_FAILED, got \(error)")
                return
            }
            #expect(text.contains("PRECONDITION_FAILED"))
        }
        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close()
    }
}
