import ArgumentParser
import Foundation

/// `kiln-bench client`: the Python producer client against the same calls written with raw pika
/// (its own cost), and against Celery's `delay().get()` and `group(...)` of a no-op on the same
/// broker, through a real worker.
struct ClientBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "The Python client: its overhead over raw pika, map against a raw burst, both against Celery.")

    @OptionGroup var bench: WorkerBenchOptions

    @Option(help: "The worker's VM backend: auto, qemu or process.")
    var backend = "auto"

    @Option(help: "The method called (serve mode, as Celery's workers stay up).")
    var method = "echo-serve"

    @Option(help: "Sequential round trips per side.")
    var latency = 500

    @Option(help: "Invocations in the map and in each burst.")
    var count = 10_000

    @Option(help: "Python with kiln_client, pika and Celery (`make bench-client` installs them into .local/venv).")
    var python = ".local/venv/bin/python"

    @Option(help: "The worker's status port.")
    var statusPort = 9492

    func run() async throws {
        try bench.requireKiln()
        let folder = ".local/bench-client"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let worker = try await BenchWorker.start(
            kiln: bench.kiln, url: bench.url, folder: folder, name: "client", statusPort: statusPort,
            configuration: bench.vmSection(backend: backend))
        let client: [String: Any]
        do {
            let (status, output) = try runToCompletion(python, [
                "Benchmarks/client_bench.py", bench.url, worker.names.prefix, "--method", method,
                "--latency", String(latency), "--count", String(count),
            ])
            guard status == 0, let line = output.split(separator: "\n").last,
                  let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw BenchmarkError("the client side failed (status \(status)): \(output.suffix(800))")
            }
            client = object
        } catch {
            worker.stop()
            try? await worker.deleteTopology()
            throw error
        }
        worker.stop()
        try await worker.deleteTopology()

        let (celeryStatus, celeryOutput) = try runToCompletion(python, [
            "Benchmarks/celery_bench.py", bench.url.replacingOccurrences(of: "/%2f", with: "//"), "--latency", String(latency),
            "--count", String(count), "--concurrency", String(cores), "--log", "\(folder)/celery.log",
        ])
        guard celeryStatus == 0, let line = celeryOutput.split(separator: "\n").last,
              let celery = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let celeryRoundTrips = celery["latency_us"] as? [Double], let celeryThroughput = celery["throughput"] as? Double else {
            throw BenchmarkError("the Celery side failed; see \(folder)/celery.log")
        }

        let raw = Summary(client["raw_round_trip_us"] as? [Double] ?? [])
        let viaClient = Summary(client["client_round_trip_us"] as? [Double] ?? [])
        let bareRaw = Summary(client["bare_raw_round_trip_us"] as? [Double] ?? [])
        let bareClient = Summary(client["bare_client_round_trip_us"] as? [Double] ?? [])
        let rawBurst = client["raw_burst_per_s"] as? Double ?? .nan
        let mapRate = client["map_per_s"] as? Double ?? .nan
        var table = TextTable("producer", "call", "round trip p50 ms", "p99 ms", "\(count) at once, /s")
        table.add("raw pika (direct reply-to, confirms)", method, ms(raw.median), ms(raw.p99), formatted(rawBurst))
        table.add("kiln_client: invoke; map", method, ms(viaClient.median), ms(viaClient.p99), formatted(mapRate))
        let celerySummary = Summary(celeryRoundTrips)
        table.add("Celery \(celery["celery"] as? String ?? "?"): delay().get(); group", "noop (prefork ×\(cores))",
                  ms(celerySummary.median), ms(celerySummary.p99), formatted(celeryThroughput))
        print("kiln-bench client: \(latency) sequential round trips per producer (raw and client interleaved), \(count) at once; broker at \(bench.url)\n")
        print(table.render())
        var bare = TextTable("against a responder that answers at once (no worker)", "n", "round trip p50 µs", "p99 µs")
        bare.add("raw pika", "\(bareRaw.count)", formatted(bareRaw.median), formatted(bareRaw.p99))
        bare.add("kiln_client invoke", "\(bareClient.count)", formatted(bareClient.median), formatted(bareClient.p99))
        print("\n" + bare.render())
        let overhead = bareClient.median - bareRaw.median
        print("")
        print("goal: the client adds ≤ 100 µs p50 over raw pika (against the responder): \(formatted(overhead)) µs, \(overhead <= 100 ? "met" : "NOT met")"
            + "; through the worker, in the method's noise: \(formatted(viaClient.median - raw.median)) µs")
        print("goal: map keeps the worker as busy as a raw burst: \(formatted(mapRate / rawBurst, decimals: 2))× the raw burst's rate, "
            + "\(mapRate >= rawBurst * 0.9 ? "met" : "NOT met") (90% or more)")
    }

    private func ms(_ microseconds: Double) -> String {
        formatted(microseconds / 1_000, decimals: 2)
    }
}
