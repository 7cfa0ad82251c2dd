import Foundation
import KilnAMQP
import KilnWire
import Testing

/// Memory at run time through a worker on QEMU: a profile with `max_memory_mb` above its
/// `memory_mb` gets its guests' memory raised through the balloon when a method runs out of it.
@Suite("Memory through a worker", .serialized)
struct MemoryThroughAWorkerTests {
    /// A worker on QEMU with one `small` VM (128 MiB, up to 384), so that every invocation meets
    /// the same one, until the pool replaces it.
    static func worker(_ names: KilnNames, relaxAfterSeconds: Int) throws -> WorkerProcess {
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-memory-\(names.prefix).yaml").path
        try """
        profiles:
          small: {vcpus: 1, memory_mb: 128, max_memory_mb: 384, min_idle: 1, max_idle: 1, max_total: 1}
        adaptive:
          relax_after_s: \(relaxAfterSeconds)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        return try WorkerProcess(names: names, environment: ["KILN_CONFIG": config, "KILN_VM_BACKEND": "qemu"])
    }

    /// The result of an `allocate` of 200 MiB.
    static func allocate(_ client: TestClient) async throws -> InvocationResult {
        let invocation = Invocation(id: "allocate-\(UUID().uuidString.prefix(8).lowercased())", method: "allocate", args: ["mb": 200])
        try await client.submit(invocation)
        let (results, _) = try await client.collect([invocation.id], timeout: .seconds(120))
        return try #require(results[invocation.id], "no result for \(invocation.id)")
    }

    @Test(.timeLimit(.minutes(4)))
    func aMethodOutOfMemoryIsRaisedAndTheNextInvocationOnItsVMSucceeds() async throws {
        let names = KilnNames(prefix: "memory-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        let worker = try Self.worker(names, relaxAfterSeconds: 3_600)
        try await worker.waitUntilReady(timeout: .seconds(180))
        func allocate() async throws -> InvocationResult { try await Self.allocate(client) }

        let starved = try await allocate()
        #expect(starved.error?.kind == "out_of_memory", "\(String(describing: starved.error))")
        #expect(starved.error?.message.contains("which the adaptive allocator may raise to 384 MiB") == true, "\(String(describing: starved.error))")
        let fed = try await allocate()
        #expect(fed.status == .ok, "\(String(describing: fed.error))")
        #expect(fed.vm?.id == starved.vm?.id, "the second invocation ran on another VM")
        #expect((fed.usage?.peakMemoryKB ?? 0) >= 200 << 10, "\(String(describing: fed.usage))")
        #expect(fed.usage?.hostCPUUs != nil)

        let metrics = try await worker.httpGet("/metrics")
        #expect(metrics.contains("kiln_vm_reallocations_total{direction=\"up\"} 1"), "\(metrics.split(separator: "\n").filter { $0.contains("realloc") })")
        #expect(worker.stop() == 0)
        await client.close()
    }

    /// A restored VM cannot give memory back through its balloon: once it has sat idle past
    /// `relax_after_s`, the pool replaces it with a new one at the profile's memory.
    @Test(.timeLimit(.minutes(4)))
    func aRestoredVMRaisedForMemoryIsReplacedOnceIdle() async throws {
        let names = KilnNames(prefix: "memory-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        let worker = try Self.worker(names, relaxAfterSeconds: 1)
        try await worker.waitUntilReady(timeout: .seconds(180))

        let starved = try await Self.allocate(client)
        #expect(starved.error?.kind == "out_of_memory", "\(String(describing: starved.error))")
        var metrics = ""
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            metrics = try await worker.httpGet("/metrics")
            if metrics.contains("kiln_vm_destroyed_total{profile=\"small\",reason=\"memory_relaxed\"} 1")
                && metrics.contains("kiln_pool_idle_vms{profile=\"small\"} 1") { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(metrics.contains("kiln_vm_destroyed_total{profile=\"small\",reason=\"memory_relaxed\"} 1"),
                "\(metrics.split(separator: "\n").filter { $0.contains("destroyed_total{") })")
        // Its replacement has the profile's memory again.
        let again = try await Self.allocate(client)
        #expect(again.error?.kind == "out_of_memory", "\(String(describing: again.error))")
        #expect(again.vm?.id != starved.vm?.id)
        #expect(worker.stop() == 0)
        await client.close()
    }
}
