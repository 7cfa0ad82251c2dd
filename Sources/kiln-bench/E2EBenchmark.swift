import ArgumentParser
import Foundation
import KilnAMQP
import KilnPool
import KilnVM
import KilnWire
import Logging

/// `kiln-bench e2e`: the whole path (producer → broker → worker → micro-VM → broker → producer)
/// with a no-op method: warm round trips and throughput, the worker's own overhead, cold starts
/// on an empty pool; beside a Celery worker on the same broker and a VM booted per invocation.
struct E2EBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "End to end through a real worker: Kiln warm and cold, Celery, and a VM booted per invocation."
    )

    @OptionGroup var bench: WorkerBenchOptions

    @Option(help: "The worker's VM backend: auto, qemu or process.")
    var backend = "auto"

    @Option(help: "The method compared with Celery's no-op task: a serve-mode method, whose runtime stays up as Celery's workers do.")
    var method = "echo-serve"

    @Option(help: "The same method in exec mode (a process per call), for contrast; empty skips it. Its burst is a tenth as long.")
    var execMethod = "echo"

    @Option(help: "The agent's builtin no-op: the platform's own overhead, never compared with peers; empty skips it.")
    var noop = "noop"

    @Option(help: "Sequential round trips to time.")
    var latency = 500

    @Option(help: "Invocations in the throughput burst.")
    var count = 5_000

    @Option(help: "Cold starts to time (each on an empty pool).")
    var cold = 20

    @Option(help: "Invocations that each boot a fresh VM (the baseline).")
    var boots = 6

    @Option(help: "Python with Celery (`make bench-e2e` installs it into .local/venv).")
    var python = ".local/venv/bin/python"

    @Flag(help: "Measure Kiln only, without Celery and the boot-per-invocation baseline.")
    var kilnOnly = false

    @Option(help: "The worker's status port.")
    var statusPort = 9490

    @Option(help: "YAML appended to the warm worker's configuration, e.g. 'profiles: {small: {max_total: 2}}'.")
    var workerYAML = ""

    func validate() throws {
        guard latency >= 20, count >= 100, cold >= 3, boots >= 2 else {
            throw ValidationError("--latency ≥ 20, --count ≥ 100, --cold ≥ 3, --boots ≥ 2")
        }
    }

    func run() async throws {
        try bench.requireKiln()
        guard kilnOnly || FileManager.default.isExecutableFile(atPath: python) else {
            throw BenchmarkError("no Python at \(python): `make bench-e2e` installs Celery into .local/venv")
        }
        let folder = ".local/bench-e2e"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        print("kiln-bench e2e: \(latency) sequential round trips and a burst of \(count) per row, \(cold) cold starts; \(cores) cores, broker at \(bench.url)")

        var workload = [(method: method, burst: count)]
        if !execMethod.isEmpty { workload.append((execMethod, max(100, count / 10))) }
        if !noop.isEmpty { workload.append((noop, count)) }
        let warm = try await measureKiln(folder: folder, name: "warm", workload: workload, extraConfiguration: workerYAML)
        let coldConfiguration = """
            profiles: {small: {min_idle: 0, max_idle: 0}}
            method_lifecycles: {\(method): {max_uses: 1}}
            """
        let empty = try await measureKiln(folder: folder, name: "cold", workload: [(method, 0)], extraConfiguration: coldConfiguration)

        var rows = TextTable("system", "isolation", "round trip p50 ms", "p99 ms", "throughput /s", "VMs started in the burst")
        var overhead = TextTable("in-worker overhead (delivery → result ready, minus the VM's exec time)", "n", "p50 µs", "p99 µs")
        for figures in warm.methods {
            let label = figures.method == noop ? "Kiln, \(noop) (agent builtin: platform overhead, not a peer comparison)"
                : "Kiln, \(figures.method) (\(figures.method == method ? "serve" : "exec") mode), warm VM"
            rows.add(label, isolation(warm.backend), ms(figures.roundTrips.median), ms(figures.roundTrips.p99), formatted(figures.throughput),
                     "\(figures.vmsCreatedInBurst)")
            overhead.add("\(figures.method), sequential", "\(figures.overheadSequential.count)",
                         formatted(figures.overheadSequential.median), formatted(figures.overheadSequential.p99))
            overhead.add("\(figures.method), during the burst (waiting for a VM included)", "\(figures.overheadBurst.count)",
                         formatted(figures.overheadBurst.median), formatted(figures.overheadBurst.p99))
        }
        let coldStarts = empty.methods[0].roundTrips
        rows.add("Kiln, \(method), cold: empty pool, a VM restored per call", isolation(empty.backend), ms(coldStarts.median), ms(coldStarts.p99), "-", "-")

        var celeryThroughput = (classic: Double.nan, quorum: Double.nan)
        var celeryRoundTrip = (classic: Double.nan, quorum: Double.nan)
        if !kilnOnly {
            let celery = try measureCelery(folder: folder, cores: cores, quorum: false)
            celeryThroughput.classic = celery.throughput
            celeryRoundTrip.classic = celery.roundTrips.median
            rows.add("Celery \(celery.version), prefork ×\(cores), rpc:// results, classic queue", "process", ms(celery.roundTrips.median), ms(celery.roundTrips.p99), formatted(celery.throughput), "-")
            // Kiln's queue is a quorum queue (replicated, written to disk) and its producers wait
            // for confirms: Celery on the same.
            let quorum = try measureCelery(folder: folder, cores: cores, quorum: true)
            celeryThroughput.quorum = quorum.throughput
            celeryRoundTrip.quorum = quorum.roundTrips.median
            rows.add("Celery \(quorum.version), the same on a quorum queue, confirmed publishes", "process", ms(quorum.roundTrips.median), ms(quorum.roundTrips.p99), formatted(quorum.throughput), "-")
            let boot = try await measureBootPerInvocation(lanes: cores)
            rows.add("\(execMethod.isEmpty ? method : execMethod) in a VM booted per call", "VM (\(boot.backend))", ms(boot.latencies.median), ms(boot.latencies.p99), formatted(boot.throughput, decimals: 2), "\(boots)")
        }

        print("\nRound trips are sequential (submit, wait for the result); throughput is a burst submitted at once, first submit to last result.")
        print(rows.render())
        print("\n" + overhead.render())
        var cpu = TextTable("CPU per invocation during the burst, µs", "worker", "VMs (QEMU + guest, or sandboxes)", "broker", "producer", "total", "bound on \(cores) cores, /s")
        for figures in warm.methods {
            guard let spent = figures.cpu else { continue }
            let total = spent.worker + spent.vms + (spent.broker.isNaN ? 0 : spent.broker) + spent.producer
            cpu.add(figures.method, formatted(spent.worker), formatted(spent.vms), spent.broker.isNaN ? "-" : formatted(spent.broker),
                    formatted(spent.producer), formatted(total), formatted(Double(cores) * 1e6 / total))
        }
        print("\n" + cpu.render())
        for figures in warm.methods where figures.batchesInBurst.batches > 0 {
            let (batches, invocations) = figures.batchesInBurst
            print("\(figures.method) during the burst: \(batches) batches holding \(invocations) invocations (\(formatted(Double(invocations) / Double(batches), decimals: 1)) each)")
        }
        let compared = warm.methods[0]
        print("\nWhere a sequential round trip of \(method) goes (medians): producer to worker \(ms(compared.toWorker)) ms (through the quorum queue), "
            + "in the worker \(ms(compared.inWorker)) ms (the method in the VM \(ms(compared.inVM)) ms), "
            + "the result back to the producer \(ms(compared.roundTrips.median - compared.toWorker - compared.inWorker)) ms.")
        print("")
        let overheadMet = compared.overheadSequential.median <= 500
        print("goal: in-worker overhead p50 ≤ 0.5 ms: \(formatted(compared.overheadSequential.median / 1_000, decimals: 3)) ms, \(overheadMet ? "met" : "NOT met")")
        if !kilnOnly {
            let ratio = compared.throughput / celeryThroughput.quorum
            print("goal: throughput ≥ 1.5× Celery's on the same queue type (quorum): \(formatted(ratio, decimals: 2))×, \(ratio >= 1.5 ? "met" : "NOT met")"
                + "; against Celery on a classic queue: \(formatted(compared.throughput / celeryThroughput.classic, decimals: 2))×")
            let roundTrip = compared.roundTrips.median
            print("goal: sequential round trip p50 ≤ Celery's (quorum queue): \(ms(roundTrip)) against \(ms(celeryRoundTrip.quorum)) ms, "
                + "\(roundTrip <= celeryRoundTrip.quorum ? "met" : "NOT met"); against the classic queue's \(ms(celeryRoundTrip.classic)) ms")
        }
    }

    private func ms(_ microseconds: Double) -> String {
        formatted(microseconds / 1_000, decimals: 2)
    }

    // MARK: Kiln

    /// One method's figures on a warm worker.
    struct MethodFigures {
        var method: String
        var roundTrips = Summary([])
        var overheadSequential = Summary([])
        var overheadBurst = Summary([])
        var throughput = Double.nan
        /// VMs the worker created during the burst.
        var vmsCreatedInBurst = 0
        /// Batches sent during the burst, and the invocations in them.
        var batchesInBurst = (batches: 0, invocations: 0)
        /// Medians of the sequential round trips' parts: to the worker, in it, in the VM.
        var toWorker = 0.0
        var inWorker = 0.0
        var inVM = 0.0
        /// CPU per invocation during the burst, µs: the worker process, its VMs (QEMU with the
        /// guest in it, or the sandboxes), the broker, the producer (this process).
        var cpu: (worker: Double, vms: Double, broker: Double, producer: Double)?
    }

    /// Starts a worker with the defaults plus `extraConfiguration` and times each method of
    /// `workload`: sequential round trips, then a burst (a burst of 0: cold starts, each with
    /// the pool empty, instead).
    private func measureKiln(
        folder: String, name: String, workload: [(method: String, burst: Int)], extraConfiguration: String = ""
    ) async throws -> (backend: String, methods: [MethodFigures]) {
        let worker = try await BenchWorker.start(
            kiln: bench.kiln, url: bench.url, folder: folder, name: name, statusPort: statusPort, configuration: """
                \(bench.vmSection(backend: backend))
                \(extraConfiguration)
                """)
        let pools = try? JSONDecoder().decode([PoolStatus].self, from: Data(try await worker.httpGet("/pool").utf8))
        let backend = pools?.first?.backend ?? "?"

        let names = worker.names
        var measured: [MethodFigures] = []
        do {
            for (method, burst) in workload {
                let client = try await BenchClient(url: bench.url, names: names, method: method)
                do {
                    measured.append(burst == 0
                        ? try await coldStarts(of: method, client: client, log: worker.log)
                        : try await warmFigures(of: method, burst: burst, client: client, worker: worker))
                    await client.close()
                } catch {
                    await client.close()
                    throw error
                }
            }
        } catch {
            worker.stop()
            try? await worker.deleteTopology()
            throw error
        }
        worker.stop()
        try await worker.deleteTopology()
        return (backend, measured)
    }

    private func coldStarts(of method: String, client: BenchClient, log: String) async throws -> MethodFigures {
        var samples: [Double] = []
        for index in 0..<cold {
            // Let the last VM go (max_uses 1) before the next call arrives.
            try await Task.sleep(for: .milliseconds(500))
            let (elapsed, result) = try await client.roundTrip()
            guard result.timing.provision > 0 else {
                throw BenchmarkError("cold start \(index) found a warm VM: is pre-warming off? (\(log))")
            }
            samples.append(elapsed)
        }
        let figures = MethodFigures(method: method, roundTrips: Summary(samples))
        progress("\(method): \(cold) cold starts, p50 \(ms(figures.roundTrips.median)) ms")
        return figures
    }

    private func warmFigures(of method: String, burst: Int, client: BenchClient, worker: BenchWorker) async throws -> MethodFigures {
        // Warm up: the model learns the method, the pool sizes itself for bursts.
        for _ in 0..<100 { _ = try await client.roundTrip() }
        _ = try await client.burst(burst / 2)
        try await Task.sleep(for: .seconds(3))

        var figures = MethodFigures(method: method)
        var roundTrips: [Double] = []
        var sequential: [InvocationResult] = []
        for _ in 0..<latency {
            let (elapsed, result) = try await client.roundTrip()
            roundTrips.append(elapsed)
            sequential.append(result)
        }
        figures.roundTrips = Summary(roundTrips)
        figures.overheadSequential = Summary(sequential.map(\.workerOverheadUs))
        figures.toWorker = Summary(sequential.map { Double($0.timing.queue ?? 0) }).median
        figures.inWorker = Summary(sequential.map { Double($0.timing.total) }).median
        figures.inVM = Summary(sequential.map { Double($0.timing.exec) }).median
        progress("\(method): \(latency) round trips, p50 \(ms(figures.roundTrips.median)) ms")

        try await Task.sleep(for: .seconds(1))
        let createdBefore = try await vmsCreated(worker)
        let batchedBefore = try await batched(worker)
        let broker = bench.url.contains("127.0.0.1:5672/") ? try? ProcessCPU.localBrokerPID() : nil
        let before = (worker: ProcessCPU.microseconds(worker.pid), vms: ProcessCPU.snapshot(ProcessCPU.descendants(of: worker.pid)),
                      broker: broker.map(ProcessCPU.microseconds) ?? 0, producer: ProcessCPU.microseconds(getpid()))
        let (seconds, results) = try await client.burst(burst)
        let vmsAfter = ProcessCPU.snapshot(ProcessCPU.descendants(of: worker.pid))
        let spent = (worker: ProcessCPU.microseconds(worker.pid) - before.worker, vms: ProcessCPU.spent(from: before.vms, to: vmsAfter),
                     broker: (broker.map(ProcessCPU.microseconds) ?? 0) - before.broker, producer: ProcessCPU.microseconds(getpid()) - before.producer)
        let count = Double(burst)
        figures.cpu = (Double(spent.worker) / count, Double(spent.vms) / count, broker == nil ? .nan : Double(spent.broker) / count,
                       Double(spent.producer) / count)
        figures.throughput = Double(burst) / seconds
        figures.vmsCreatedInBurst = try await vmsCreated(worker) - createdBefore
        let batchedAfter = try await batched(worker)
        figures.batchesInBurst = (batchedAfter.batches - batchedBefore.batches, batchedAfter.invocations - batchedBefore.invocations)
        figures.overheadBurst = Summary(results.map(\.workerOverheadUs))
        progress("\(method): a burst of \(burst), \(formatted(figures.throughput)) invocations/s, \(figures.vmsCreatedInBurst) VMs created")
        return figures
    }

    /// What a backend isolates with, for the table: the process sandbox is no VM.
    private func isolation(_ backend: String) -> String {
        backend == "process" ? "sandbox (namespaces, no VM)" : "VM (\(backend))"
    }

    /// VMs the worker has created so far, from its /metrics.
    private func vmsCreated(_ worker: BenchWorker) async throws -> Int {
        try await worker.httpGet("/metrics").split(separator: "\n")
            .filter { $0.hasPrefix("kiln_vm_create_seconds_count") }
            .compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }
            .reduce(0, +)
    }

    /// Batches the worker has sent so far, and the invocations in them, from its /metrics.
    private func batched(_ worker: BenchWorker) async throws -> (batches: Int, invocations: Int) {
        let lines = try await worker.httpGet("/metrics").split(separator: "\n")
        func counter(_ name: String) -> Int {
            lines.first { $0.hasPrefix(name + " ") }.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }.map { Int($0) } ?? 0
        }
        return (counter("kiln_batches_total"), counter("kiln_batched_invocations_total"))
    }

    // MARK: Peers

    /// Runs Benchmarks/celery_bench.py with the same counts; on a quorum queue with confirmed
    /// publishes when `quorum`.
    private func measureCelery(folder: String, cores: Int, quorum: Bool) throws -> (version: String, roundTrips: Summary, throughput: Double) {
        progress("celery: starting a prefork worker (\(cores) processes) on a \(quorum ? "quorum" : "classic") queue")
        let brokerURL = bench.url.replacingOccurrences(of: "/%2f", with: "//")
        let log = "\(folder)/celery-\(quorum ? "quorum" : "classic").log"
        let (status, output) = try runToCompletion(python, [
            "Benchmarks/celery_bench.py", brokerURL, "--latency", String(latency), "--count", String(count),
            "--concurrency", String(cores), "--log", log,
        ] + (quorum ? ["--quorum"] : []))
        guard status == 0, let line = output.split(separator: "\n").last,
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let latencies = object["latency_us"] as? [Double], let throughput = object["throughput"] as? Double
        else {
            throw BenchmarkError("the Celery side failed (status \(status)); see \(log)")
        }
        progress("celery: \(formatted(throughput)) tasks/s")
        return (object["celery"] as? String ?? "?", Summary(latencies), throughput)
    }

    /// Boots a fresh VM for each invocation, runs the method, destroys the VM: `lanes` at a time.
    private func measureBootPerInvocation(lanes: Int) async throws -> (backend: String, latencies: Summary, throughput: Double) {
        let logger = Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() }
        let guestImage = try GuestImage.open(directory: "\(bench.imageCache)/current")
        let bootMethod = execMethod.isEmpty ? method : execMethod
        guard let entry = guestImage.manifest.guestEntry(for: bootMethod) else {
            throw BenchmarkError("the image has no method \(bootMethod)")
        }
        let payload = try MessagePackEncoder().encode(["args": .map([])] as MessagePackValue)
        var settings = QEMUDriver.Configuration()
        settings.standbyPerTemplate = 0
        let driver = try QEMUDriver(image: guestImage, configuration: settings, logger: logger)
        let backend = "qemu/\(await driver.accelerator().rawValue)"
        progress("boot per call: \(boots) fresh boots, \(lanes) at a time")
        let clock = ContinuousClock()
        let start = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for lane in 0..<lanes {
                group.addTask {
                    var samples: [Double] = []
                    for index in stride(from: lane, to: boots, by: lanes) {
                        let begin = clock.now
                        let vm = try await driver.boot(.small)
                        let result = try await vm.exec(GuestFrame.ExecRequest(
                            id: "boot-\(index)", method: bootMethod, entry: entry, payload: payload, deadlineMs: 5_000))
                        await vm.destroy()
                        guard result.status == .ok else { throw BenchmarkError("\(bootMethod) failed in a fresh VM: \(result.stderr)") }
                        samples.append(begin.duration(to: clock.now).microseconds)
                    }
                    return samples
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let elapsed = start.duration(to: clock.now).seconds
        await driver.shutdown()
        return (backend, Summary(latencies), Double(boots) / elapsed)
    }

    private func progress(_ line: String) {
        FileHandle.standardError.write(Data("  \(line)\n".utf8))
    }
}

extension InvocationResult {
    /// The worker's own time: from receipt to the result being ready, less the VM's exec time.
    var workerOverheadUs: Double { Double(timing.total - min(timing.total, timing.exec)) }
}
