import Foundation
import KilnAMQP
import KilnTestSupport
import KilnWire
import Testing

/// Cross-host affinity with three workers on the test broker: every invocation of a key runs on
/// the one host the key hashes to, whichever worker took it from the shared queue; when that
/// host's worker is killed, its keys' invocations come back to the shared queue after the hold
/// and run elsewhere. Nothing is lost either way.
@Suite("Cross-host affinity", .serialized)
struct CrossHostAffinityTests {
    static let holdMs = 8_000

    @Test(.timeLimit(.minutes(5)))
    func aKeyRunsOnOneHostAndFallsBackWhenThatHostIsGone() async throws {
        let names = KilnNames(prefix: "affinity-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        let workers = try (0..<3).map { index in
            try WorkerProcess(names: names, environment: [
                "KILN_VM_BACKEND": "process", "KILN_WORKER_HOST": "host-\(index)",
                "KILN_AFFINITY_CROSS_HOST": "true", "KILN_AFFINITY_HOLD_MS": "\(Self.holdMs)",
            ])
        }
        defer { for worker in workers { worker.stop() } }
        for worker in workers { try await worker.waitUntilReady() }

        func keyed(_ key: String, _ count: Int) -> [Invocation] {
            (0..<count).map {
                Invocation(id: "\(key)-\($0)-\(UUID().uuidString.prefix(6))", method: "echo", args: ["n": .int(Int64($0))],
                           deadlineMs: 60_000, affinity: Affinity(key: key))
            }
        }
        let keys = (0..<9).map { "user-\($0)" }
        let first = keys.flatMap { keyed($0, 12) }.shuffled()
        for invocation in first { try await client.submit(invocation) }
        let (results, _) = try await client.collect(Set(first.map(\.id)), timeout: .seconds(180))
        var owner: [String: String] = [:]
        for key in keys {
            let hosts = Set(first.filter { $0.affinity?.key == key }.compactMap { results[$0.id]?.host })
            #expect(hosts.count == 1, "\(key) ran on \(hosts.sorted())")
            owner[key] = hosts.first
        }
        #expect(results.values.allSatisfy { $0.status == .ok })
        #expect(Set(owner.values).count > 1, "every key on one host: \(owner)")

        // The host of user-0 goes away: its keys wait out the hold in its queue, come back to the
        // shared queue and run on the others.
        let gone = try #require(owner["user-0"])
        workers[Int(gone.dropFirst("host-".count))!].kill()
        let after = keyed("user-0", 5)
        for invocation in after { try await client.submit(invocation) }
        let (fallback, _) = try await client.collect(Set(after.map(\.id)), timeout: .seconds(180))
        #expect(fallback.values.allSatisfy { $0.status == .ok && $0.host != gone }, "\(fallback.values.map { $0.host ?? "-" })")

        // The host is gone for good: `kiln fleet forget` hands its keys to the others (a live
        // host's queue it refuses to touch).
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KILN_") }
            .merging(["KILN_AMQP_URL": WorkerProcess.brokerURL, "KILN_AMQP_PREFIX": names.prefix]) { $1 }
        let live = try #require(owner.values.first { $0 != gone })
        let refused = try runToCompletion(WorkerProcess.binary, ["fleet", "forget", live], environment: environment)
        #expect(refused.status == 1 && refused.output.contains("stop the worker on \(live) first"), "\(refused.output)")
        let forgot = try runToCompletion(WorkerProcess.binary, ["fleet", "forget", gone], environment: environment)
        #expect(forgot.status == 0 && forgot.output.contains("forgot \(gone)"), "\(forgot.output)")
        #expect(try BrokerAdmin.queueCounts(names.workerQueue(host: gone)) == nil, "its queue is still there")
        let afterForget = keyed("user-0", 5)
        for invocation in afterForget { try await client.submit(invocation) }
        let (settled, _) = try await client.collect(Set(afterForget.map(\.id)), timeout: .seconds(180))
        // (Both live hosts ran user-0 during the fallback: each has a VM warm for it and runs it
        // where it arrives.)
        #expect(settled.values.allSatisfy { $0.status == .ok && $0.host != gone })
        await client.close()
    }
}
