import Foundation
import KilnAMQP
import KilnWire
import Testing

/// The whole path with real parts: the `kiln worker` binary, the broker `make test` starts,
/// QEMU micro-VMs restored from snapshots, the example methods.
@Suite("End to end", .serialized)
struct EndToEndTests {
    func names() -> KilnNames {
        KilnNames(prefix: "e2e-\(UUID().uuidString.prefix(6).lowercased())")
    }

    /// An invocation under a deadline no loaded host misses (unless a test gives a short one).
    func invocation(_ method: String, _ args: MessagePackValue = .nil, deadline: UInt64? = 60_000) -> Invocation {
        Invocation(id: "\(method)-\(UUID().uuidString.prefix(8).lowercased())", method: method, args: args, deadlineMs: deadline)
    }

    @Test(.timeLimit(.minutes(3)))
    func eachMethodGetsTheRightResult() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        // A tap on the telemetry exchange, as a consumer of the events would have.
        let telemetryTap = "\(names.prefix).telemetry-tap"
        try await client.connection.declare(AMQPTopology(
            queues: [.init(name: telemetryTap, durable: false, autoDelete: false)],
            bindings: [.init(queue: telemetryTap, exchange: names.telemetryExchange, routingKey: "#")]))
        // An invocation another consumer took and gave back before this worker started: the
        // worker runs its second attempt.
        let retried = invocation("echo", ["retried": true])
        try await client.submit(retried)
        let observer = AMQPConnection(configuration: try AMQPConfiguration(url: WorkerProcess.brokerURL), logger: TestClient.logger)
        try await observer.connect()
        var taken = try await observer.consume(queue: names.invocationsQueue, prefetch: 1).makeAsyncIterator()
        let givenBack = try #require(try await taken.next())
        await observer.cancelConsumer()  // so that the broker does not hand it straight back
        try givenBack.reject(requeue: true)

        let worker = try WorkerProcess(names: names)
        try await worker.waitUntilReady()

        let echo = invocation("echo", ["text": "hi", "n": 3, "raw": .binary([1, 2])])
        let sleep = invocation("sleep", ["ms": 30])
        let fail = invocation("fail", ["message": "on purpose"])
        let slow = invocation("sleep", ["ms": 10_000], deadline: 300)
        let unknown = invocation("no-such-method")
        let sha = invocation("sha256", ["data": "abc"])
        // Serve mode through the worker: the runtimes stay up across the pool's resets.
        let counted = invocation("wordcount", ["text": "one two three"])
        let served = invocation("echo-serve", ["text": "served"])
        let noop = invocation("noop")
        // A runtime that dies mid-call: a crash, whose VM is destroyed (`destroy_on_crash`).
        let crash = invocation("echo-serve", ["crash": true])
        for item in [echo, sleep, fail, slow, unknown, sha, counted, served, noop, crash] { try await client.submit(item) }
        // A body that is not MessagePack goes to the dead-letter queue with the reason.
        try await client.connection.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "echo", body: [0xc1, 0x00]))

        let ids: Set = [echo.id, sleep.id, fail.id, slow.id, unknown.id, sha.id, counted.id, served.id, noop.id, crash.id, retried.id]
        let (results, _) = try await client.collect(ids, timeout: .seconds(90))
        let echoed = try #require(results[echo.id])
        #expect(echoed.status == .ok)
        #expect(echoed.output == echo.args)
        #expect(echoed.vm?.backend == "qemu")
        #expect(echoed.worker.isEmpty == false)
        #expect(echoed.timing.total >= echoed.timing.exec)
        #expect(results[sleep.id]?.status == .ok)
        #expect(results[sleep.id]?.output?["slept_ms"] == 30)
        #expect((results[sleep.id]?.timing.exec ?? 0) >= 30_000)
        let failed = try #require(results[fail.id])
        #expect(failed.status == .error)
        #expect(failed.error?.kind == "exit")
        #expect(failed.error?.exitCode == 3)
        #expect(failed.error?.stderr?.contains("on purpose") == true)
        let timedOut = try #require(results[slow.id])
        #expect(timedOut.status == .timeout)
        // Cut short: the sleep asked for 10 s.
        #expect((timedOut.timing.exec) < 10_000_000)
        #expect(results[unknown.id]?.status == .rejected)
        #expect(results[unknown.id]?.error?.kind == "unknown_method")
        #expect(results[sha.id]?.output == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(results[counted.id]?.output?["words"] == 3, "\(String(describing: results[counted.id]?.error))")
        #expect(results[served.id]?.output == served.args, "\(String(describing: results[served.id]?.error))")
        #expect(results[noop.id]?.status == .ok)
        #expect(results[crash.id]?.status == .error)
        #expect(results[crash.id]?.error?.kind == "crash", "\(String(describing: results[crash.id]?.error))")
        #expect(results[retried.id]?.status == .ok)
        #expect(results[retried.id]?.attempt == 2, "attempt \(String(describing: results[retried.id]?.attempt))")
        #expect(results[echo.id]?.attempt == 1)

        let dead = try await client.connection.consume(queue: names.deadQueue, prefetch: 10)
        var iterator = dead.makeAsyncIterator()
        let letter = try #require(try await iterator.next())
        #expect(letter.body == [0xc1, 0x00])
        #expect(letter.properties.headers[KilnNames.errorHeader]?.stringValue?.contains("0xc1") == true)
        try letter.ack()

        // The VMs that timed out and crashed were destroyed, with the reasons in the metrics; the
        // one whose method failed was kept (`destroy_on_error: false`). A VM is destroyed while its
        // result is published: the metrics may trail the result a little.
        var metrics = try await worker.httpGet("/metrics")
        let metricsDeadline = ContinuousClock.now + .seconds(60)
        while !metrics.contains("reason=\"tainted:crash\"") || !metrics.contains("reason=\"tainted:timeout\""),
              ContinuousClock.now < metricsDeadline {
            try await Task.sleep(for: .milliseconds(100))
            metrics = try await worker.httpGet("/metrics")
        }
        #expect(metrics.contains("kiln_vm_destroyed_total{profile=\"small\",reason=\"tainted:timeout\"}"))
        #expect(metrics.contains("kiln_vm_destroyed_total{profile=\"small\",reason=\"tainted:crash\"}"))
        #expect(!metrics.contains("reason=\"tainted:error\""))

        // The telemetry: every invocation's completion with its placement, and why each VM was made.
        var events = try await observer.consume(queue: telemetryTap, prefetch: 100).makeAsyncIterator()
        var completed = Set<String>()
        var creationReasons: [String] = []
        let telemetryDeadline = ContinuousClock.now + .seconds(60)
        while !(completed.isSuperset(of: [echo.id, retried.id]) && !creationReasons.isEmpty), ContinuousClock.now < telemetryDeadline {
            guard let delivery = try await events.next() else { break }
            try delivery.ack()
            switch try MessagePackDecoder().decode(TelemetryEvent.self, from: delivery.body).payload {
            case .invocationCompleted(let event) where event.placement?.candidates.isEmpty == false: completed.insert(event.id)
            case .vmCreated(let event): creationReasons.append(event.reason ?? "")
            default: break
            }
        }
        #expect(completed.isSuperset(of: [echo.id, retried.id]), "invocation.completed seen for \(completed.count) invocations")
        #expect(!creationReasons.isEmpty && creationReasons.allSatisfy { $0.hasPrefix("cold start") || $0.hasPrefix("replenish") },
                "vm.created reasons: \(creationReasons)")
        try await observer.deleteQueue(telemetryTap)
        await observer.close(grace: .seconds(1))
        #expect(metrics.contains("kiln_invocations_total{method=\"echo\",status=\"ok\"}"))
        #expect(worker.stop() == 0)
        await client.close()
    }

    @Test(.timeLimit(.minutes(5)))
    func aBurstOf500GivesEveryResultOnceAndThePoolRefills() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names)
        try await worker.waitUntilReady()

        let burst = (0..<500).map { invocation("echo", ["i": .uint(UInt64($0))]) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for item in burst { group.addTask { try await client.submit(item) } }
            try await group.waitForAll()
        }
        let (results, duplicates) = try await client.collect(Set(burst.map(\.id)), timeout: .seconds(240))
        #expect(results.count == 500)
        #expect(duplicates == 0)
        #expect(results.values.allSatisfy { $0.status == .ok })
        for item in burst { #expect(results[item.id]?.output == item.args) }

        // After the burst the pool holds idle VMs again, ready for the next one.
        let deadline = ContinuousClock.now + .seconds(90)
        var idle = 0
        while ContinuousClock.now < deadline {
            let status = try await worker.httpGet("/pool")
            // Every pool's idle VMs (the medium pool keeps none without demand).
            idle = status.matches(of: /"idle" : (\d+)/).compactMap { Int($0.1) }.reduce(0, +)
            if idle >= 1 { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(idle >= 1)
        #expect(worker.stop() == 0)
        await client.close()
    }

    @Test(.timeLimit(.minutes(3)))
    func replyToGetsTheResultWithTheCorrelationID() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names)
        try await worker.waitUntilReady()

        let replyQueue = "\(names.prefix).replies"
        try await client.connection.declare(AMQPTopology(queues: [.init(name: replyQueue, durable: false, autoDelete: false)]))
        let item = invocation("echo", ["reply": true])
        try await client.submit(item, replyTo: replyQueue)
        let replies = AMQPConnection(configuration: try AMQPConfiguration(url: WorkerProcess.brokerURL), logger: TestClient.logger)
        try await replies.connect()
        var iterator = try await replies.consume(queue: replyQueue, prefetch: 1).makeAsyncIterator()
        let reply = try #require(try await iterator.next())
        #expect(reply.properties.correlationID == item.id)
        let result = try MessagePackDecoder().decode(InvocationResult.self, from: reply.body)
        #expect(result.id == item.id)
        #expect(result.output == item.args)
        try reply.ack()
        try await replies.deleteQueue(replyQueue)
        await replies.close(grace: .zero)
        #expect(worker.stop() == 0)
        await client.close()
    }

    @Test(.timeLimit(.minutes(5)))
    func aRestartedWorkerFinishesWhatADrainedOneLeft() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        let first = try WorkerProcess(names: names)
        try await first.waitUntilReady()

        let burst = (0..<150).map { invocation("sleep", ["ms": .uint(UInt64(20 + $0 % 3))]) }
        for item in burst { try await client.submit(item) }
        // Let it get going, then SIGTERM in the middle of the burst: it drains and exits.
        _ = try? await client.collect(Set(burst.prefix(10).map(\.id)), timeout: .seconds(60))
        #expect(first.stop() == 0, "the draining worker did not exit cleanly: \(first.tail())")

        let second = try WorkerProcess(names: names)
        try await second.waitUntilReady()
        let (results, _) = try await client.collect(Set(burst.map(\.id)), timeout: .seconds(180))
        #expect(results.count == burst.count)
        #expect(results.values.allSatisfy { $0.status == .ok })
        // Both workers served part of it.
        #expect(Set(results.values.map(\.worker)).count == 2)
        #expect(second.stop() == 0)
        await client.close()
    }
}
