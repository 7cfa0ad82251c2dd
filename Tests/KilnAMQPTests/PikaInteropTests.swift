import Foundation
import KilnTestSupport
import KilnAMQP
import KilnWire
import Testing

/// Python's pika reads what KilnAMQP publishes, and KilnAMQP reads what pika publishes.
@Suite("pika interop")
struct PikaInteropTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs the pika peer and returns its standard output.
    func peer(_ arguments: [String]) throws -> String {
        let python = ProcessInfo.processInfo.environment["KILN_INTEROP_PYTHON"]
            ?? Self.root.appendingPathComponent(".local/venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw TestTimeout(description: "no Python with pika at \(python): run Tests/interop/venv.sh (make test does)")
        }
        let script = Self.root.appendingPathComponent("Tests/interop/pika_peer.py").path
        let (status, output) = try runToCompletion(python, [script] + arguments)
        guard status == 0 else { throw TestTimeout(description: "pika peer \(arguments.first ?? "") exited \(status): \(output)") }
        return output
    }

    @Test func pikaConsumesWhatKilnPublishes() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("to-pika")
        try await connection.declare(.kiln(names))
        for index in 0..<20 {
            let invocation = Invocation(id: "swift-\(index)", method: "echo", args: ["n": .uint(UInt64(index)), "bin": .binary([1, 2])])
            try await connection.publish(AMQPMessage(
                exchange: names.invokeExchange, routingKey: "echo", body: try MessagePackEncoder().encode(invocation),
                properties: .msgpack(messageID: invocation.id), mandatory: true))
        }
        let output = try peer(["consume", TestBroker.url, names.invocationsQueue, "20"])
        let result = try #require(output.split(separator: "\n").first { $0.hasPrefix("RESULT ") }, "no result in: \(output)")
        let seen = try JSONSerialization.jsonObject(with: Data(result.dropFirst("RESULT ".count).utf8)) as? [String: Any]
        #expect(seen?["ids"] as? [String] == (0..<20).map { "swift-\($0)" })
        #expect(Set(seen?["content_types"] as? [String] ?? []) == ["application/msgpack"])
        let firstArgs = (seen?["args"] as? [[String: Any]])?.first
        #expect(firstArgs?["n"] as? Int == 0)
        #expect((firstArgs?["bin"] as? [String: String])?["$bin"] == "AQI=")
        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close()
    }

    @Test func kilnConsumesWhatPikaPublishes() async throws {
        let names = TestBroker.uniqueNames()
        let connection = try await TestBroker.connect("from-pika")
        try await connection.declare(.kiln(names))
        let consumer = try await connection.consume(queue: names.invocationsQueue, prefetch: 50)
        _ = try peer(["publish", TestBroker.url, names.invokeExchange, "wordcount", "30"])
        let deliveries = try await consumer.take(30)
        for (index, delivery) in deliveries.enumerated() {
            #expect(delivery.properties.contentType == "application/msgpack")
            let invocation = try delivery.body.withUnsafeBytes {
                try Invocation.decode(body: $0, messageID: delivery.properties.messageID)
            }
            #expect(invocation.id == "pika-\(index)")
            #expect(invocation.method == "wordcount")
            #expect(invocation.args["n"] == .uint(UInt64(index)))
            #expect(invocation.args["blob"] == .binary([UInt8](repeating: UInt8(index), count: 3)))
            try delivery.ack()
        }
        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close()
    }
}
