import Foundation
import KilnAMQP
import Synchronization
import Testing

/// Faults on a broker of the test's own (on ports free when it starts), so that stopping it disturbs no other test:
/// a graceful restart, a kill -9 and a hang (SIGSTOP) while a publisher keeps publishing with
/// confirms and a consumer keeps acknowledging. Every confirmed message must arrive.
@Suite("Broker faults", .serialized)
struct BrokerFaultTests {
    let broker = PrivateBroker()

    func configuration(_ name: String) throws -> AMQPConfiguration {
        var configuration = try TestBroker.configuration(name, url: broker.url)
        configuration.heartbeat = .seconds(1)
        configuration.handshakeTimeout = .seconds(3)
        configuration.rpcTimeout = .seconds(3)
        configuration.reconnect = .init(initialDelay: .milliseconds(100), maximumDelay: .seconds(1))
        return configuration
    }

    @Test(.timeLimit(.minutes(3)))
    func nothingIsLostAcrossRestartKillAndHang() async throws {
        try broker.run("start")
        defer { broker.stopAndRemove() }

        let names = TestBroker.uniqueNames()
        let publisher = AMQPConnection(configuration: try configuration("fault-publisher"), publishWindow: 20, logger: TestBroker.logger)
        let consumerConnection = AMQPConnection(configuration: try configuration("fault-consumer"), logger: TestBroker.logger)
        try await publisher.connect()
        try await consumerConnection.connect()
        try await publisher.declare(.kiln(names))
        try await consumerConnection.declare(.kiln(names))
        let consumer = try await consumerConnection.consume(queue: names.invocationsQueue, prefetch: 20)

        let received = IDSet()
        let confirmed = IDSet()
        let receiving = Task {
            for try await delivery in consumer {
                received.insert(Int(String(decoding: delivery.body, as: UTF8.self))!)
                try? delivery.ack() // A stale ack is fine: the broker redelivers.
            }
        }
        // Ten concurrent publishers, each about 25 messages a second, until told to stop.
        let stop = StopFlag()
        let publishing = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<10 {
                    group.addTask {
                        var id = lane
                        while !stop.isSet {
                            try await publisher.publish(AMQPMessage(
                                exchange: names.invokeExchange, routingKey: "fault", body: Array(String(id).utf8),
                                properties: .init(deliveryMode: 2)))
                            confirmed.insert(id)
                            id += 10
                            try await Task.sleep(for: .milliseconds(40))
                        }
                    }
                }
                try await group.waitForAll()
            }
        }

        // Before each fault and after the last, publishing and consuming get going again: a
        // few dozen more messages confirmed and received.
        func progressed(after fault: String) async throws {
            let (sent, got) = (confirmed.snapshot.count, received.snapshot.count)
            let deadline = ContinuousClock.now + .seconds(60)
            while confirmed.snapshot.count < sent + 25 || received.snapshot.count < got + 25, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(confirmed.snapshot.count >= sent + 25 && received.snapshot.count >= got + 25,
                    "publishing or consuming stalled \(fault): \(confirmed.snapshot.count - sent) confirmed, \(received.snapshot.count - got) received")
        }
        try await progressed(after: "from the start")
        try broker.run("stop")
        try broker.run("start")
        try await progressed(after: "after the restart")

        try broker.kill9()
        try broker.run("start")
        try await progressed(after: "after the kill")

        // The hang is the fault itself: four heartbeats of silence, then the broker goes on.
        let hung = try broker.pid()
        kill(hung, SIGSTOP)
        try await Task.sleep(for: .seconds(4))
        kill(hung, SIGCONT)
        try await progressed(after: "after the hang")

        stop.set()
        try await publishing.value
        let deadline = ContinuousClock.now + .seconds(60)
        while !confirmed.snapshot.isSubset(of: received.snapshot), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        receiving.cancel()

        let lost = confirmed.snapshot.subtracting(received.snapshot)
        #expect(lost.isEmpty, "\(lost.count) confirmed messages never arrived: \(lost.sorted().prefix(20))")
        // Connected once, then again after the restart, the kill and the hang.
        #expect(publisher.connectionCount >= 4)
        #expect(consumerConnection.connectionCount >= 4)

        await publisher.close(grace: .seconds(1))
        await consumerConnection.close(grace: .seconds(1))
    }
}

/// Ids seen by one task and read by another.
final class IDSet: Sendable {
    private let ids = Mutex(Set<Int>())

    func insert(_ id: Int) {
        _ = ids.withLock { $0.insert(id) }
    }

    var snapshot: Set<Int> { ids.withLock { $0 } }
}

/// Tells the publishing tasks to stop.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    var isSet: Bool { flag.load(ordering: .relaxed) }

    func set() {
        flag.store(true, ordering: .relaxed)
    }
}
