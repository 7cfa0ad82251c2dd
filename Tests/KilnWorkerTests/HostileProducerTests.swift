import Foundation
import KilnAMQP
import KilnWire
import Testing

/// What a producer can send that a worker must survive, each through a real worker (on the
/// process sandbox: what is checked is the worker's reading of messages, the same for every
/// backend) and the broker `make test` starts. After every attack the worker still serves, and
/// nothing valid is lost.
@Suite("Hostile producers", .serialized)
struct HostileProducerTests {
    func names() -> KilnNames {
        KilnNames(prefix: "hostile-p-\(UUID().uuidString.prefix(6).lowercased())")
    }

    /// Publishes a hand-made body (any MessagePack map) with `id` as its message id.
    func publish(_ body: MessagePackValue, id: String, routingKey: String = "echo", client: TestClient, replyTo: String? = nil) async throws {
        try await client.connection.publish(AMQPMessage(
            exchange: client.names.invokeExchange, routingKey: routingKey, body: try MessagePackEncoder().encode(body),
            properties: .msgpack(messageID: id, correlationID: id, replyTo: replyTo)))
    }

    /// Dead letters until every id in `ids` (their message ids) has come, by id; those that
    /// came within a minute when some never do.
    func deadLetters(_ ids: Set<String>, client: TestClient) async throws -> [String: AMQPDelivery] {
        let consumer = try await client.connection.consume(queue: client.names.deadQueue, prefetch: 100)
        let letters = LetterBox()
        let reader = Task {
            for try await letter in consumer {
                try letter.ack()
                letters.add(letter)
            }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while !ids.isSubset(of: letters.ids), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        reader.cancel()
        await client.connection.cancelConsumer()
        return letters.byID
    }

    @Test(.timeLimit(.minutes(3)))
    func fieldsOutOfRangeAreRefusedWithTheReasonAndTheWorkerServesOn() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names, environment: ["KILN_VM_BACKEND": "process"])
        try await worker.waitUntilReady()

        // Results: each deadline that cannot be honoured is rejected, not run.
        var rejectedDeadlines: [String] = []
        for (index, deadline) in [UInt64(0), 900_001, 1 << 63, .max].enumerated() {
            let id = "deadline-\(index)"
            try await publish(["v": 1, "id": .string(id), "method": "sleep", "args": ["ms": 1], "deadline_ms": .uint(deadline)], id: id, client: client)
            rejectedDeadlines.append(id)
        }
        // Accepted: numbers at their extremes that reach no arithmetic, strings that fit.
        let accepted: [(String, MessagePackValue)] = [
            ("submitted-max", ["v": 1, "id": "submitted-max", "method": "echo", "args": ["i": 1], "submitted_at_us": .uint(.max)]),
            ("submitted-zero", ["v": 1, "id": "submitted-zero", "method": "echo", "args": ["i": 2], "submitted_at_us": 0]),
            ("resources-zero", ["v": 1, "id": "resources-zero", "method": "echo", "args": ["i": 3], "resources": ["vcpus": 0, "memory_mb": 0]]),
            ("affinity-64k", ["v": 1, "id": "affinity-64k", "method": "echo", "args": ["i": 4],
                              "affinity": ["key": .string(String(repeating: "a", count: 65_536))]]),
            ("id-255", ["v": 1, "id": .string("id-255" + String(repeating: "x", count: 249)), "method": "echo", "args": ["i": 5]]),
            ("routed-elsewhere", ["v": 1, "id": "routed-elsewhere", "method": "echo", "args": ["i": 6]]),
        ]
        for (id, body) in accepted {
            // The body's method is the method: the routing key only routes (here to the same queue).
            try await publish(body, id: body["id"]?.stringValue ?? id, routingKey: id == "routed-elsewhere" ? "sleep" : "echo", client: client)
        }
        // reply_to naming a queue that does not exist (at AMQP's 255 bytes, as the correlation id):
        // the result still reaches kiln.results.
        let longReply = "\(names.prefix).nobody-listens-" + String(repeating: "r", count: 255 - names.prefix.count - 16)
        try await client.connection.publish(AMQPMessage(
            exchange: names.invokeExchange, routingKey: "echo",
            body: try MessagePackEncoder().encode(["v": 1, "id": "no-reply-queue", "method": "echo", "args": ["i": 7]] as MessagePackValue),
            properties: .msgpack(messageID: "no-reply-queue", correlationID: String(repeating: "c", count: 255), replyTo: longReply)))
        // Dead letters: what no result can carry, or no manifest can name.
        let refused: [(String, MessagePackValue)] = [
            ("method-5000", ["v": 1, "id": "method-5000", "method": .string(String(repeating: "m", count: 5_000))]),
            ("method-65", ["v": 1, "id": "method-65", "method": .string(String(repeating: "m", count: 65))]),
            ("method-spaces", ["v": 1, "id": "method-spaces", "method": "rm -rf"]),
            ("resources-huge", ["v": 1, "id": "resources-huge", "method": "echo", "resources": ["vcpus": .uint(1 << 63)]]),
            ("deadline-negative", ["v": 1, "id": "deadline-negative", "method": "echo", "deadline_ms": .int(-1)]),
        ]
        for (id, body) in refused { try await publish(body, id: id, client: client) }
        // Ids that cannot be a result's message id: the message id property names them here.
        try await publish(["v": 1, "id": .string(String(repeating: "i", count: 256)), "method": "echo"], id: "id-256", client: client)
        try await publish(["v": 1, "id": .string(String(repeating: "i", count: 65_536)), "method": "echo"], id: "id-64k", client: client)

        let expectedResults = Set(rejectedDeadlines + accepted.map { $0.1["id"]?.stringValue ?? $0.0 } + ["no-reply-queue"])
        let (results, _) = try await client.collect(expectedResults, timeout: .seconds(60))
        for id in rejectedDeadlines {
            #expect(results[id]?.status == .rejected, "\(id): \(String(describing: results[id]))")
            #expect(results[id]?.error?.kind == "invalid_deadline")
        }
        for id in expectedResults.subtracting(rejectedDeadlines) {
            #expect(results[id]?.status == .ok, "\(id): \(String(describing: results[id]?.error))")
        }
        #expect(results["routed-elsewhere"]?.method == "echo")
        #expect(results["routed-elsewhere"]?.output == ["i": 6])

        let letters = try await deadLetters(Set(refused.map(\.0) + ["id-256", "id-64k"]), client: client)
        for id in refused.map(\.0) + ["id-256", "id-64k"] {
            let reason = letters[id]?.properties.headers[KilnNames.errorHeader]?.stringValue
            #expect(reason != nil, "\(id) was not dead-lettered")
            #expect((reason ?? "").utf8.count <= 1_100)
        }
        #expect(letters["method-5000"]?.properties.headers[KilnNames.errorHeader]?.stringValue?.contains("method must be") == true)
        #expect(letters["id-64k"]?.properties.headers[KilnNames.errorHeader]?.stringValue?.contains("id must be") == true)

        // It serves on: an ordinary call gets its result, and the worker never reconnected.
        let after = Invocation(id: "after-\(UUID().uuidString.prefix(6))", method: "echo", args: ["after": true])
        try await client.submit(after)
        let (last, _) = try await client.collect([after.id], timeout: .seconds(30))
        #expect(last[after.id]?.output == after.args)
        // What it consumed: the call's bytes both ways and its CPU, in the result and on /metrics.
        let usage = try #require(last[after.id]?.usage, "a result without usage")
        #expect((usage.bytesIn ?? 0) > 0 && (usage.bytesOut ?? 0) > 0 && usage.cpuUs != nil && usage.hostCPUUs != nil, "\(usage)")
        let metrics = try await worker.httpGet("/metrics")
        #expect(metrics.contains("kiln_method_cpu_seconds_total{method=\"echo\"}"))
        #expect(metrics.contains("kiln_method_host_cpu_seconds_total{method=\"echo\"}"))
        #expect(metrics.contains("kiln_dead_letters_total{reason=\"invalid_value\"}"))
        // Every family the worker serves is one the operator's files may use (KilnMetric).
        let served = Set(metrics.split(separator: "\n").filter { $0.hasPrefix("kiln_") }.map { String($0.prefix { $0 != "{" && $0 != " " }) })
        #expect(served.subtracting(OperatorFilesTests.exported).isEmpty, "\(served.subtracting(OperatorFilesTests.exported))")
        #expect(!worker.logText.contains("connection lost"), "\(worker.tail())")
        #expect(worker.stop() == 0)
        await client.close()
    }

    /// Bodies at and past the worker's limits (a body limit of 64 KiB here), nesting, invalid
    /// UTF-8 and a repeated id.
    @Test(.timeLimit(.minutes(3)))
    func bodiesAtAndPastTheLimitsAndWhatIsNotUTF8() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names, environment: [
            "KILN_VM_BACKEND": "process", "KILN_LIMITS_MAX_BODY_BYTES": "65536", "KILN_LIMITS_MAX_DEPTH": "24",
        ])
        try await worker.waitUntilReady()
        func raw(_ bytes: [UInt8], id: String) async throws {
            try await client.connection.publish(AMQPMessage(
                exchange: names.invokeExchange, routingKey: "echo", body: bytes, properties: .msgpack(messageID: id)))
        }
        /// An echo invocation whose body is exactly `size` bytes.
        func sized(_ size: Int, id: String) throws -> [UInt8] {
            var padding = 0
            while true {
                let body = try MessagePackEncoder().encode(
                    ["v": 1, "id": .string(id), "method": "echo", "args": ["pad": .binary([UInt8](repeating: 7, count: padding))]] as MessagePackValue)
                if body.count == size { return body }
                padding += size - body.count
                if body.count > size { padding -= 1 }
            }
        }
        func nested(_ depth: Int) -> MessagePackValue {
            var value: MessagePackValue = 1
            for _ in 0..<depth { value = .array([value]) }
            return value
        }
        try await raw(try sized(65_536, id: "at-body-limit"), id: "at-body-limit")
        try await raw(try sized(65_537, id: "over-body-limit"), id: "over-body-limit")
        // The body's map is depth 1: 23 arrays in its args reach the limit of 24.
        try await raw(try MessagePackEncoder().encode(["v": 1, "id": "at-depth", "method": "echo", "args": nested(23)] as MessagePackValue), id: "at-depth")
        try await raw(try MessagePackEncoder().encode(["v": 1, "id": "over-depth", "method": "echo", "args": nested(24)] as MessagePackValue), id: "over-depth")
        // {v: 1, id: "u8", method: "echo", args: {x: <0xff 0xfe>}} and {…, args: {<0xc3 0x28>: 1}}
        let head: [UInt8] = [0x84, 0xa1, 0x76, 0x01, 0xa2, 0x69, 0x64]
        let method: [UInt8] = [0xa6] + Array("method".utf8) + [0xa4] + Array("echo".utf8) + [0xa4] + Array("args".utf8)
        try await raw(head + [0xa5] + Array("bad-v".utf8) + method + [0x81, 0xa1, 0x78, 0xa2, 0xff, 0xfe], id: "bad-value")
        try await raw(head + [0xa5] + Array("bad-k".utf8) + method + [0x81, 0xa2, 0xc3, 0x28, 0x01], id: "bad-key")
        // The same id twice: Kiln does not deduplicate (at-least-once); each delivery gets its result.
        let twice = Invocation(id: "twice-\(UUID().uuidString.prefix(6))", method: "echo", args: ["n": 1])
        try await client.submit(twice)
        try await client.submit(twice)

        let (results, _) = try await client.collect(["at-body-limit", "at-depth", twice.id], timeout: .seconds(60))
        #expect(results["at-body-limit"]?.status == .ok)
        #expect(results["at-depth"]?.status == .ok)
        let letters = try await deadLetters(["over-body-limit", "over-depth", "bad-value", "bad-key"], client: client)
        #expect(letters["over-body-limit"]?.properties.headers[KilnNames.errorHeader]?.stringValue?.contains("body size") == true)
        #expect(letters["over-depth"]?.properties.headers[KilnNames.errorHeader]?.stringValue?.contains("nesting depth") == true)
        #expect(letters["bad-value"]?.properties.headers[KilnNames.errorHeader] != nil)
        #expect(letters["bad-key"]?.properties.headers[KilnNames.errorHeader] != nil)
        // Both deliveries of the repeated id ran.
        let deadline = ContinuousClock.now + .seconds(90)
        while client.box.snapshot.1 < 1, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(client.box.snapshot.1 == 1, "the second delivery of \(twice.id) got no result")
        #expect(worker.stop() == 0)
        await client.close()
    }

    @Test(.timeLimit(.minutes(5)))
    func tenThousandUnknownMethodsLeaveMetricsAndMemoryBounded() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names, environment: ["KILN_VM_BACKEND": "process"])
        try await worker.waitUntilReady()
        // A first batch, so that what the worker allocates once (buffers, the first series) is
        // in the starting figure.
        func flood(_ range: Range<Int>) async throws -> Set<String> {
            let ids = range.map { "unknown-\($0)" }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<16 {
                    group.addTask {
                        for index in stride(from: lane, to: ids.count, by: 16) {
                            try await publish(["v": 1, "id": .string(ids[index]), "method": .string("no-such-method-\(range.lowerBound + index)")],
                                              id: ids[index], routingKey: "no-such-method-\(range.lowerBound + index)", client: client)
                        }
                    }
                }
                try await group.waitForAll()
            }
            return Set(ids)
        }
        _ = try await client.collect(try await flood(0..<500), timeout: .seconds(60))
        let startKB = try residentKB(worker.pid)
        let metricsBefore = try await worker.httpGet("/metrics").utf8.count

        let (results, _) = try await client.collect(try await flood(500..<10_500), timeout: .seconds(240))
        #expect(results.values.allSatisfy { $0.status == .rejected && $0.error?.kind == "unknown_method" })
        let metrics = try await worker.httpGet("/metrics")
        #expect(metrics.utf8.count < 64 * 1_024, "/metrics grew from \(metricsBefore) to \(metrics.utf8.count) bytes")
        #expect(metrics.contains("kiln_invocations_total{method=\"(unknown)\",status=\"rejected\"} 10500"))
        #expect(!metrics.contains("no-such-method"))
        let endKB = try residentKB(worker.pid)
        #expect(endKB - startKB < 20 * 1_024, "RSS grew from \(startKB) KiB to \(endKB) KiB")
        #expect(worker.stop() == 0)
        await client.close()
    }

    /// 50,000 invocations published faster than the worker runs them: the queue holds them, the
    /// prefetch lets the worker take a few at a time, its memory stays put, and every one gets
    /// its result.
    @Test(.timeLimit(.minutes(6)))
    func aFloodWaitsInTheQueueNotInTheWorker() async throws {
        let names = names()
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names, environment: ["KILN_VM_BACKEND": "process"])
        try await worker.waitUntilReady()
        let warmup = (0..<200).map { Invocation(id: "warm-\($0)", method: "noop") }
        for item in warmup { try await client.submit(item) }
        _ = try await client.collect(Set(warmup.map(\.id)), timeout: .seconds(60))
        let startKB = try residentKB(worker.pid)

        let count = 50_000
        let ids = (0..<count).map { "flood-\($0)" }
        let peakKB = PeakBox()
        let watching = Task {
            while !Task.isCancelled {
                peakKB.see(try residentKB(worker.pid))
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<32 {
                group.addTask {
                    for index in stride(from: lane, to: count, by: 32) {
                        try await client.submit(Invocation(id: ids[index], method: "noop"))
                    }
                }
            }
            try await group.waitForAll()
        }
        // Every one is with the broker now; most still wait in the queue, not in the worker.
        let answeredWhenPublished = client.box.snapshot.0.count - warmup.count
        let (results, duplicates) = try await client.collect(Set(ids), timeout: .seconds(300))
        watching.cancel()
        #expect(results.count == count)
        #expect(duplicates == 0)
        #expect(results.values.allSatisfy { $0.status == .ok })
        #expect(answeredWhenPublished < count, "the worker had answered all \(count) by the time they were published")
        let peak = peakKB.value
        #expect(peak - startKB < 64 * 1_024, "RSS from \(startKB) KiB to a peak of \(peak) KiB")
        #expect(worker.stop() == 0)
        await client.close()
    }

    /// VmRSS of `pid`, KiB.
    func residentKB(_ pid: pid_t) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) })
        else { throw HarnessError("no VmRSS for \(pid)") }
        return value
    }
}

/// Dead letters read so far, by message id.
final class LetterBox: @unchecked Sendable {
    private let lock = NSLock()
    private var letters: [String: AMQPDelivery] = [:]

    func add(_ letter: AMQPDelivery) {
        lock.withLock { letters[letter.properties.messageID ?? ""] = letter }
    }

    var ids: Set<String> { lock.withLock { Set(letters.keys) } }
    var byID: [String: AMQPDelivery] { lock.withLock { letters } }
}

/// The largest figure seen, shared with a watching task.
final class PeakBox: @unchecked Sendable {
    private let lock = NSLock()
    private var peak = 0

    func see(_ value: Int) {
        lock.withLock { peak = max(peak, value) }
    }

    var value: Int { lock.withLock { peak } }
}
