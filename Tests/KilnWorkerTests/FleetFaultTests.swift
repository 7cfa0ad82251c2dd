import Foundation
import KilnAMQP
import KilnTestSupport
import KilnWire
import Logging
import Testing

/// A fleet under faults: three broker nodes clustered on this host, three workers (two on the
/// process backend, one on QEMU) started at the same moment, each connected to another node,
/// 10,000 invocations in flight; one broker node and one worker are SIGKILLed mid-burst and
/// started again. Every invocation gets a result, a second result only ever as a redelivery
/// (`attempt > 1`), and nothing is dead-lettered. (A result can also arrive twice as the same
/// message: a worker whose node died resends the publishes the dead node never confirmed, and
/// some of them had got through. Such copies are one result.)
@Suite("Fleet under faults", .serialized)
struct FleetFaultTests {
    static let invocations = 10_000

    @Test(.timeLimit(.minutes(15)))
    func aKilledNodeAndAKilledWorkerLoseNothing() async throws {
        let cluster = try LocalCluster(size: 3)
        defer { cluster.remove() }
        try cluster.start()
        let names = KilnNames(prefix: "fault-\(UUID().uuidString.prefix(6).lowercased())")
        // Worker i connects to node i first, and on to the next when that one goes.
        func urls(from first: Int) -> String {
            (0..<3).map { cluster.urls[(first + $0) % 3] }.joined(separator: ",")
        }
        func worker(_ index: Int) throws -> WorkerProcess {
            var environment = ["KILN_AMQP_URL": urls(from: index), "KILN_WORKER_HOST": "host-\(index)"]
            if index < 2 { environment["KILN_VM_BACKEND"] = "process" }
            return try WorkerProcess(names: names, environment: environment)
        }
        // Started at the same moment: each declares the topology; all three must come up.
        var workers = try (0..<3).map(worker)
        defer { for worker in workers { worker.stop() } }
        for worker in workers { try await worker.waitUntilReady(timeout: .seconds(300)) }

        let producer = try await ClusterProducer(names: names, endpoints: cluster.urls)
        let ids = (0..<Self.invocations).map { "fault-\($0)-\(UUID().uuidString.prefix(6))" }
        let publishing = Task {
            try await producer.publish(ids.map { Invocation(id: $0, method: "echo", args: ["i": .string($0)], deadlineMs: 120_000) })
        }

        // Mid-burst: the node worker 1 is on, and worker 0, are killed.
        try await producer.waitForResults(atLeast: 2_000, timeout: .seconds(300))
        try cluster.killNode(1)
        workers[0].kill()
        let atKill = producer.resultCount
        // The fleet goes on without them; then both come back.
        try await producer.waitForResults(atLeast: min(Self.invocations, atKill + 1_000), timeout: .seconds(300))
        try cluster.start()
        workers[0] = try worker(0)
        try await workers[0].waitUntilReady(timeout: .seconds(300))
        try await publishing.value

        try await producer.waitForResults(atLeast: Self.invocations, timeout: .seconds(600))
        let attempts = producer.attempts
        let missing = ids.filter { attempts[$0] == nil }
        #expect(missing.isEmpty, "\(missing.count) invocations without a result, e.g. \(missing.prefix(3))")
        let firstAttemptTwice = attempts.filter { $0.value.filter { $0 == 1 }.count > 1 }
        #expect(firstAttemptTwice.isEmpty, "results of attempt 1 given twice: \(firstAttemptTwice.prefix(3))")
        #expect(producer.failures.isEmpty, "results not ok: \(producer.failures.prefix(3))")
        let redelivered = attempts.values.filter { $0.contains { $0 > 1 } }.count
        let dead = try cluster.ctl(0, ["list_queues", "name", "messages", "--no-table-headers", "--quiet"]).output
            .split(separator: "\n").first { $0.hasPrefix(names.deadQueue + "\t") || $0.hasPrefix(names.deadQueue + " ") }
        #expect(dead.map { $0.split(whereSeparator: \.isWhitespace).last == "0" } ?? false, "dead letters: \(String(describing: dead))")
        let hosts = Set(producer.hosts)
        #expect(hosts == ["host-0", "host-1", "host-2"], "\(hosts)")
        print("fleet under faults: \(ids.count) results, \(redelivered) redelivered, \(producer.duplicates) duplicates, "
            + "\(producer.resent) copies of a result resent, hosts \(hosts.sorted())")
        await producer.close()
    }
}

extension FleetFaultTests {
    /// A partition as far as one host can make one: a node stops trusting the others' Erlang
    /// cookie, so neither side reaches the other. With `pause_minority` the node alone pauses (its
    /// clients are cut off, its port closes), the worker on it moves to a node of the majority and
    /// serves on; healed, the node starts again and rejoins. Nothing is lost.
    @Test(.timeLimit(.minutes(10)))
    func aPartitionedNodePausesAndItsWorkerMovesToTheMajority() async throws {
        let cluster = try LocalCluster(size: 3)
        defer { cluster.remove() }
        try cluster.start()
        let names = KilnNames(prefix: "split-\(UUID().uuidString.prefix(6).lowercased())")
        let workers = try [0, 2].map { first in
            try WorkerProcess(names: names, environment: [
                "KILN_AMQP_URL": (0..<3).map { cluster.urls[(first + $0) % 3] }.joined(separator: ","),
                "KILN_WORKER_HOST": "host-\(first)", "KILN_VM_BACKEND": "process",
            ])
        }
        defer { for worker in workers { worker.stop() } }
        for worker in workers { try await worker.waitUntilReady(timeout: .seconds(300)) }

        let producer = try await ClusterProducer(names: names, endpoints: cluster.urls)
        func batch(_ name: String, _ count: Int) -> [Invocation] {
            (0..<count).map { Invocation(id: "\(name)-\($0)-\(UUID().uuidString.prefix(6))", method: "echo", args: ["i": .int(Int64($0))], deadlineMs: 120_000) }
        }
        let before = batch("before", 500)
        try await producer.publish(before)
        try await producer.waitForResults(atLeast: before.count, timeout: .seconds(300))

        try cluster.partition(2)
        let deadline = ContinuousClock.now + .seconds(120)
        while cluster.isServing(2) || !portIsFree(cluster.base + 2) {
            guard ContinuousClock.now < deadline else { throw HarnessError("node 2 did not pause") }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(cluster.isServing(0) && cluster.isServing(1), "the majority serves on")
        // Work sent during the partition: the worker that was on node 2 takes its share through
        // the majority.
        let during = batch("during", 1_000)
        try await producer.publish(during)
        try await producer.waitForResults(atLeast: before.count + during.count, timeout: .seconds(300))
        let hostsDuring = producer.hosts(of: Set(during.map(\.id)))
        #expect(hostsDuring["host-2", default: 0] > 0 && hostsDuring["host-0", default: 0] > 0, "\(hostsDuring)")

        try cluster.heal(2)
        let healDeadline = ContinuousClock.now + .seconds(120)
        while !cluster.isServing(2) {
            guard ContinuousClock.now < healDeadline else { throw HarnessError("node 2 did not start again after the heal") }
            try await Task.sleep(for: .milliseconds(200))
        }
        let running = try cluster.ctl(0, ["eval", "rabbit_nodes:all_running()."]).output
        #expect((0..<3).allSatisfy { running.contains(cluster.nodeName($0)) }, "\(running)")
        let after = batch("after", 500)
        try await producer.publish(after)
        try await producer.waitForResults(atLeast: before.count + during.count + after.count, timeout: .seconds(300))

        let attempts = producer.attempts
        #expect(!attempts.values.contains { $0.filter { $0 == 1 }.count > 1 }, "a result of attempt 1 given twice")
        #expect(producer.failures.isEmpty, "results not ok: \(producer.failures.prefix(3))")
        await producer.close()
    }
}

/// A producer of the test's own on the cluster: publishes with confirms through a connection
/// that moves between nodes, and reads results from a quorum queue of its own (a classic one
/// would be lost with its node).
final class ClusterProducer: @unchecked Sendable {
    let names: KilnNames
    let publisher: AMQPConnection
    let consumer: AMQPConnection
    private let lock = NSLock()
    private var seen: [String: [UInt32]] = [:]
    private var notOK: [String] = []
    private var ranOn: [String: Set<String>] = [:]
    private var distinct: Set<ResultIdentity> = []
    private var copies = 0
    private var reader: Task<Void, any Error>?
    static let logger = Logger(label: "kiln.fault-test") { _ in SwiftLogNoOpLogHandler() }

    init(names: KilnNames, endpoints: [String]) async throws {
        self.names = names
        let configurations = try endpoints.map { try AMQPConfiguration(url: $0) }
        publisher = AMQPConnection(endpoints: configurations, publishWindow: 2_000, logger: Self.logger)
        consumer = AMQPConnection(endpoints: configurations, logger: Self.logger)
        try await publisher.connect()
        try await consumer.connect()
        let tap = "\(names.prefix).results-tap"
        try await consumer.declare(AMQPTopology(
            queues: [.init(name: tap, arguments: ["x-queue-type": "quorum"])],
            bindings: [.init(queue: tap, exchange: names.resultsExchange, routingKey: "#")]))
        let results = try await consumer.consume(queue: tap, prefetch: 2_000)
        reader = Task { [self] in
            let decoder = MessagePackDecoder()
            for try await delivery in results {
                let result = try decoder.decode(InvocationResult.self, from: delivery.body)
                lock.withLock {
                    // The same result message twice (a resent publish) is one result.
                    guard distinct.insert(ResultIdentity(id: result.id, attempt: result.attempt, worker: result.worker,
                                                         finishedAtUs: result.finishedAtUs)).inserted else {
                        copies += 1
                        return
                    }
                    seen[result.id, default: []].append(result.attempt)
                    if let host = result.host { ranOn[result.id, default: []].insert(host) }
                    if result.status != .ok { notOK.append("\(result.id): \(result.status) \(result.error?.message ?? "")") }
                }
                try delivery.ack()
            }
        }
    }

    /// Publishes every invocation, a window of them at a time, each awaited until confirmed.
    func publish(_ invocations: [Invocation]) async throws {
        let encoder = MessagePackEncoder()
        for chunk in stride(from: 0, to: invocations.count, by: 1_000).map({ invocations[$0..<min($0 + 1_000, invocations.count)] }) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for invocation in chunk {
                    let body = try encoder.encode(invocation)
                    group.addTask {
                        try await self.publisher.publish(AMQPMessage(
                            exchange: self.names.invokeExchange, routingKey: invocation.method, body: body,
                            properties: .msgpack(messageID: invocation.id)))
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    var resultCount: Int { lock.withLock { seen.count } }
    var attempts: [String: [UInt32]] { lock.withLock { seen } }
    var failures: [String] { lock.withLock { notOK } }
    var hosts: Set<String> { lock.withLock { ranOn.values.reduce(into: []) { $0.formUnion($1) } } }
    /// How many of `ids` each host ran.
    func hosts(of ids: Set<String>) -> [String: Int] {
        lock.withLock {
            ids.reduce(into: [:]) { counts, id in for host in ranOn[id] ?? [] { counts[host, default: 0] += 1 } }
        }
    }

    /// Second (and later) results of an id, each from another run of it.
    var duplicates: Int { lock.withLock { seen.values.reduce(0) { $0 + $1.count - 1 } } }
    /// Result messages that arrived again, the same.
    var resent: Int { lock.withLock { copies } }

    /// Waits until results for `count` distinct ids came in.
    func waitForResults(atLeast count: Int, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while resultCount < count {
            guard ContinuousClock.now < deadline else { throw HarnessError("only \(resultCount) of \(count) results within \(timeout)") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func close() async {
        reader?.cancel()
        await publisher.close(grace: .seconds(1))
        await consumer.close(grace: .seconds(1))
    }
}

/// What tells two runs' results apart: a resent copy has all of it the same.
struct ResultIdentity: Hashable {
    let id: String
    let attempt: UInt32
    let worker: String
    let finishedAtUs: UInt64
}
