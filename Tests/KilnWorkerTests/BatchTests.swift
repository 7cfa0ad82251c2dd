import Foundation
import KilnAMQP
import KilnWire
import Testing

/// Batches through a worker: with one VM and a burst, the invocations that wait for it leave in
/// batches (`pool.batch_calls`), and each still gets its own result, status and timing; a call
/// that ends its batch's VM leaves the calls after it to run again, alone.
@Suite("Batches through a worker", .serialized)
struct BatchTests {
    /// A worker with one `small` VM (so that a burst waits for it), sandboxed processes, room
    /// for the whole burst in flight, and batches of 8 whatever the model predicts of the methods.
    static func worker(_ names: KilnNames) throws -> WorkerProcess {
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-batch-\(names.prefix).yaml").path
        try """
        profiles:
          small: {vcpus: 1, memory_mb: 128, min_idle: 1, max_idle: 1, max_total: 1}
        pool:
          batch_calls: 8
          batch_window_ms: 60000
        amqp:
          prefetch: 64
        """.write(toFile: config, atomically: true, encoding: .utf8)
        return try WorkerProcess(names: names, environment: ["KILN_CONFIG": config, "KILN_VM_BACKEND": "process"])
    }

    static func invocation(_ method: String, _ args: MessagePackValue, deadline: UInt64 = 60_000) -> Invocation {
        Invocation(id: "\(method)-\(UUID().uuidString.prefix(8).lowercased())", method: method, args: args, deadlineMs: deadline)
    }

    /// The value of a counter in the worker's metrics (0 when absent).
    static func counter(_ name: String, in metrics: String) -> Double {
        metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
    }

    @Test(.timeLimit(.minutes(3)))
    func aBurstOnOneVMLeavesInBatchesAndEachInvocationGetsItsOwnResult() async throws {
        let names = KilnNames(prefix: "batch-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        let worker = try Self.worker(names)
        try await worker.waitUntilReady()

        let echoes = (0..<40).map { Self.invocation("echo-serve", ["i": .uint(UInt64($0))]) }
        // A crash in the middle of the burst: its batch ends there, the calls after it run again.
        let crash = Self.invocation("echo-serve", ["crash": true])
        for (index, item) in echoes.enumerated() {
            try await client.submit(item)
            if index == 20 { try await client.submit(crash) }
        }
        let (results, _) = try await client.collect(Set(echoes.map(\.id) + [crash.id]), timeout: .seconds(120))
        for item in echoes {
            let result = try #require(results[item.id])
            #expect(result.status == .ok, "\(item.args): \(String(describing: result.error))")
            #expect(result.output == item.args)
            #expect(result.attempt == 1)
            #expect(result.timing.total >= result.timing.exec)
            #expect(result.predictedUs != nil)
        }
        #expect(results[crash.id]?.status == .error)
        #expect(results[crash.id]?.error?.kind == "crash", "\(String(describing: results[crash.id]?.error))")
        // Reuse counts go up through a batch: no two results claim the same use of one VM.
        let uses = echoes.compactMap { results[$0.id]?.vm }.map { "\($0.id)#\($0.reuseCount)" }
        #expect(Set(uses).count == uses.count, "\(uses)")

        let metrics = try await worker.httpGet("/metrics")
        let batches = Self.counter("kiln_batches_total", in: metrics)
        let batched = Self.counter("kiln_batched_invocations_total", in: metrics)
        #expect(batches >= 1 && batched >= 2 * batches, "batches \(batches), invocations in them \(batched)")
        #expect(worker.stop() == 0)
        await client.close()
    }

    /// A call that runs past its deadline in a batch times out alone: the calls after it did not
    /// run there, and run again elsewhere with their own results.
    @Test(.timeLimit(.minutes(3)))
    func aTimeoutInABatchFailsOnlyItsOwnInvocation() async throws {
        let names = KilnNames(prefix: "batch-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        let worker = try Self.worker(names)
        try await worker.waitUntilReady()

        let sleeps = (0..<16).map { Self.invocation("sleep", ["ms": .uint(UInt64(20 + $0))]) }
        let stuck = Self.invocation("sleep", ["ms": 30_000], deadline: 500)
        for (index, item) in sleeps.enumerated() {
            try await client.submit(item)
            if index == 6 { try await client.submit(stuck) }
        }
        let (results, _) = try await client.collect(Set(sleeps.map(\.id) + [stuck.id]), timeout: .seconds(120))
        for item in sleeps {
            let result = try #require(results[item.id])
            #expect(result.status == .ok, "\(item.args): \(String(describing: result.error))")
            #expect(result.output?["slept_ms"] == item.args["ms"])
        }
        #expect(results[stuck.id]?.status == .timeout)
        #expect((results[stuck.id]?.timing.exec ?? 0) < 30_000_000)
        #expect(Self.counter("kiln_batches_total", in: try await worker.httpGet("/metrics")) >= 1)
        #expect(worker.stop() == 0)
        await client.close()
    }
}
