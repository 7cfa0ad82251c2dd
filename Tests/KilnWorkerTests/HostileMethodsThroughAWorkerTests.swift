import Foundation
import KilnAMQP
import KilnWire
import Testing

/// The `hostile-*` example methods through a real worker (its default backend): what a
/// producer calling them sees, and that the worker and its pool serve on.
@Suite("Hostile methods through a worker", .serialized)
struct HostileMethodsThroughAWorkerTests {
    @Test(.timeLimit(.minutes(4)))
    func hostileMethodsGetTheirResultsAndTheWorkerServesOn() async throws {
        let names = KilnNames(prefix: "hostile-m-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names)
        try await worker.waitUntilReady()
        func invocation(_ method: String) -> Invocation {
            Invocation(id: "\(method)-\(UUID().uuidString.prefix(6))", method: method)
        }
        let memory = invocation("hostile-memory")
        let bomb = invocation("hostile-fork-bomb")
        let escape = invocation("hostile-escape")
        let network = invocation("hostile-network")
        for item in [memory, bomb, escape, network] { try await client.submit(item) }
        let (results, _) = try await client.collect([memory.id, bomb.id, escape.id, network.id], timeout: .seconds(180))
        let oom = try #require(results[memory.id])
        #expect(oom.status == .error)
        #expect(oom.error?.kind == "out_of_memory", "\(String(describing: oom.error))")
        #expect(oom.error?.message.contains("128 MiB") == true)
        #expect(results[bomb.id]?.status == .timeout || results[bomb.id]?.status == .error)
        #expect(results[escape.id]?.output == "contained", "\(String(describing: results[escape.id]?.error))")
        #expect(results[network.id]?.output == "refused", "\(String(describing: results[network.id]?.error))")

        // The pool serves on: an ordinary call on the same worker.
        let after = Invocation(id: "after-\(UUID().uuidString.prefix(6))", method: "echo", args: ["still": "here"], deadlineMs: 60_000)
        try await client.submit(after)
        let (last, _) = try await client.collect([after.id], timeout: .seconds(120))
        #expect(last[after.id]?.output == after.args)
        #expect(worker.stop() == 0)
        await client.close()
    }
}
