import Foundation
import KilnAMQP
import KilnTestSupport
import Testing

/// `deploy/local/rabbitmq.sh` beside another broker on the same host: a node name in use is
/// refused at once with the variable to set, a bad port is refused before anything starts, and
/// no crash dump is left in the folder the script was started from.
@Suite("Local broker script", .serialized)
struct LocalBrokerScriptTests {
    let script = PrivateBroker().root.appendingPathComponent("deploy/local/rabbitmq.sh").path

    /// Runs the script from `folder` with `variables`.
    func start(from folder: URL, _ variables: [String]) throws -> (status: Int32, output: String) {
        try runToCompletion("/usr/bin/env", ["-C", folder.path] + variables + [script, "start"])
    }

    @Test(.timeLimit(.minutes(5)))
    func aSecondNodeOfTheSameNameIsRefusedAtOnceNamingTheVariable() throws {
        let first = PrivateBroker()
        try first.run("start")
        defer { first.stopAndRemove() }
        let second = PrivateBroker()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-broker-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }

        let (status, output) = try start(from: folder, [
            "KILN_AMQP_PORT=\(second.port)", "KILN_RABBITMQ_NODENAME=kiln-test-\(first.port)@localhost",
            "KILN_RABBITMQ_STATE=\(folder.appendingPathComponent("state").path)",
        ])
        #expect(status == 1, "\(output)")
        #expect(output.contains("a node named kiln-test-\(first.port) is already running") && output.contains("KILN_RABBITMQ_NODENAME"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("erl_crash.dump").path))
        // The first broker is untouched.
        try first.run("status")
    }

    @Test func aPortThatIsNotANumberIsRefusedBeforeAnythingStarts() throws {
        let folder = FileManager.default.temporaryDirectory
        let (status, output) = try start(from: folder, ["KILN_AMQP_PORT=56x2"])
        #expect(status == 2 && output.contains("KILN_AMQP_PORT must be a port"), "\(status): \(output)")
    }

    /// `cluster start 3`: three nodes on consecutive free ports, one cluster, its URLs printed;
    /// a quorum queue declared through any node has a member on each; `cluster stop` ends them.
    @Test(.timeLimit(.minutes(5)))
    func aClusterOfThreeNodesHoldsQuorumQueuesOnEveryNode() async throws {
        let cluster = try LocalCluster(size: 3)
        defer { cluster.remove() }
        let (status, output) = try cluster.cluster(["start", "3"])
        #expect(status == 0, "\(output)")
        let urls = output.split(separator: "\n").filter { $0.hasPrefix("amqp://") }.map(String.init)
        #expect(urls == cluster.urls, "\(output)")

        // A quorum queue declared through the last node spans all three.
        let connection = AMQPConnection(configuration: try AMQPConfiguration(url: urls.last ?? ""), logger: TestBroker.logger)
        try await connection.connect()
        try await connection.declare(AMQPTopology(queues: [.init(name: "spread", arguments: ["x-queue-type": .string("quorum")])]))
        await connection.close(grace: .zero)
        let (_, queues) = try cluster.ctl(0, ["list_queues", "name", "members", "--no-table-headers", "--quiet"])
        let members = queues.split(separator: "\n").first { $0.hasPrefix("spread") } ?? ""
        #expect((0..<3).allSatisfy { members.contains(cluster.nodeName($0)) }, "\(queues)")

        // A connection to the cluster moves to another node when its node dies, and the quorum
        // queue, with two of its three members, still takes and gives messages.
        let failover = AMQPConnection(
            endpoints: try urls.map { try AMQPConfiguration(url: $0) }, logger: TestBroker.logger)
        try await failover.connect()
        try await failover.publish(AMQPMessage(exchange: "", routingKey: "spread", body: [1]))
        try cluster.killNode(0)
        let deadline = ContinuousClock.now + .seconds(120)
        while failover.connectionCount < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(failover.connectionCount == 2, "the connection did not move to another node")
        try await failover.publish(AMQPMessage(exchange: "", routingKey: "spread", body: [2]))
        var received: [[UInt8]] = []
        for try await delivery in try await failover.consume(queue: "spread", prefetch: 10) {
            received.append(delivery.body)
            try delivery.ack()
            if received.count == 2 { break }
        }
        #expect(received == [[1], [2]])
        await failover.close(grace: .seconds(1))

        let (stopped, stopOutput) = try cluster.cluster(["stop"])
        #expect(stopped == 0, "\(stopOutput)")
        #expect((0..<3).allSatisfy { portIsFree(cluster.base + $0) }, "a node still listens")
    }
}
