import Foundation
import KilnAMQP
import KilnClient
import KilnTestSupport
import KilnWire
import Testing

/// A fleet as an operator sees it: two workers with their own host ids on one broker, each
/// result saying which host ran it, each worker's metrics naming its host, and `kiln fleet
/// status` listing both and then the one that was killed as gone.
@Suite("Fleet", .serialized)
struct FleetTests {
    @Test(.timeLimit(.minutes(4)))
    func fleetStatusShowsEveryWorkerAndAKilledOneAsGone() async throws {
        let names = KilnNames(prefix: "fleet-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        defer { Task { await client.close() } }
        let workers = try ["host-a", "host-b"].map { host in
            try WorkerProcess(names: names, environment: ["KILN_VM_BACKEND": "process", "KILN_WORKER_HOST": host])
        }
        defer { for worker in workers { worker.stop() } }
        for worker in workers { try await worker.waitUntilReady() }

        // Results say which host ran them.
        let invocations = (0..<6).map { Invocation(id: "fleet-\($0)-\(UUID().uuidString.prefix(6))", method: "echo", args: ["n": .int(Int64($0))]) }
        for invocation in invocations { try await client.submit(invocation) }
        let (results, _) = try await client.collect(Set(invocations.map(\.id)), timeout: .seconds(120))
        for result in results.values {
            #expect(result.status == .ok)
            #expect(result.host == "host-a" || result.host == "host-b", "\(String(describing: result.host))")
            #expect(result.worker.hasPrefix(result.host ?? "?"))
        }
        // Metrics name the host (an info metric to join a fleet's series on).
        let metrics = try await workers[0].httpGet("/metrics")
        #expect(metrics.split(separator: "\n").contains { $0.hasPrefix("kiln_worker_info{") && $0.contains(#"host="host-a""#) && $0.contains(#"backend="process""#) },
                "\(metrics.prefix(2_000))")

        // Both live, with their backend and pools.
        let both = try await fleet(names) { entries in
            entries.filter { $0["state"] as? String == "live" }.compactMap { $0["host"] as? String }.sorted() == ["host-a", "host-b"]
        }
        for entry in both {
            #expect(entry["backend"] as? String == "process")
            let pools = entry["pools"] as? [[String: Any]] ?? []
            #expect(pools.contains { $0["profile"] as? String == "small" }, "\(entry)")
        }

        // host-b is killed: it stops reporting and is shown as gone, host-a still live.
        workers[1].kill()
        let after = try await fleet(names) { entries in
            entries.contains { $0["host"] as? String == "host-b" && $0["state"] as? String == "gone" }
        }
        #expect(after.contains { $0["host"] as? String == "host-a" && $0["state"] as? String == "live" }, "\(after)")
    }

    /// Runs `kiln fleet status --json` until `done` holds for what it prints; returns that.
    func fleet(_ names: KilnNames, until done: ([[String: Any]]) -> Bool) async throws -> [[String: Any]] {
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KILN_") }
            .merging(["KILN_AMQP_URL": WorkerProcess.brokerURL, "KILN_AMQP_PREFIX": names.prefix]) { $1 }
        var last = ""
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            let (status, output) = try runToCompletion(
                WorkerProcess.binary, ["fleet", "status", "--json", "--for", "1s", "--gone-after", "3s"], environment: environment)
            #expect(status == 0, "\(output)")
            last = output
            let entries = output.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            if done(entries) { return entries }
        }
        throw HarnessError("kiln fleet status never showed what was expected; last:\n\(last)")
    }
}

/// The fleet view on its own, with the clock given.
@Suite("Fleet view")
struct FleetViewTests {
    func sample(_ host: String, _ worker: String, at: UInt64, idle: UInt32 = 1) -> TelemetryEvent {
        TelemetryEvent(host: host, worker: worker, atUs: at, payload: .hostSample(.init(
            cpuUtil: 0.5, memAvailableMB: 1_000, memPressure: 0, netRxBps: 0, netTxBps: 0, vmsIdle: idle, vmsBusy: 0, backend: "qemu")))
    }

    @Test func theNewestSampleWinsAndSilenceMakesAWorkerGone() {
        var view = FleetView()
        view.ingest(sample("b", "b-1", at: 9_000_000, idle: 3))
        view.ingest(sample("a", "a-1", at: 10_000_000, idle: 2))
        view.ingest(sample("a", "a-1", at: 8_000_000, idle: 7))  // older, arriving late: ignored
        view.ingest(TelemetryEvent(host: "c", worker: "c-1", atUs: 10_000_000, payload: .vmDestroyed(.init(vm: "v", reason: "ttl", lifetimeUs: 1, uses: 1))))

        let entries = view.entries(nowUs: 13_500_000, goneAfterUs: 4_000_000)
        #expect(entries.map(\.worker.worker) == ["a-1", "b-1"], "live first; only workers that sent samples")
        #expect(entries.map(\.state) == [.live, .gone])
        #expect(entries[0].worker.sample.vmsIdle == 2 && entries[0].silentForUs == 3_500_000)
        // A worker whose clock runs ahead of the judge's is live, silent for 0.
        #expect(view.entries(nowUs: 9_000_000, goneAfterUs: 1).first { $0.worker.worker == "a-1" }?.silentForUs == 0)
    }
}
