import ArgumentParser
import Foundation
import KilnAMQP
import KilnClient
import KilnWire
import Logging

/// `kiln-bench fleet`: three workers (process backend) as a fleet. Cross-host affinity: the
/// share of keyed invocations that found a VM warm for their key, with and without it. Scale:
/// bursts through 1, 2 and 3 workers on a 3-node cluster, and 3 workers on one node, with the
/// brokers' own CPU per invocation.
struct FleetBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet", abstract: "Cross-host affinity's warm hits, and throughput of 1–3 workers on one node and on a cluster.")

    @OptionGroup var bench: WorkerBenchOptions

    @Option(help: "Keyed invocations per affinity run.")
    var keyed = 600

    @Option(help: "Distinct affinity keys.")
    var keys = 12

    @Option(help: "Keyed invocations submitted per second (paced, as a steady producer sends them).")
    var rate = 40

    @Option(help: "Invocations per throughput burst.")
    var burst = 3_000

    @Option(help: "The cluster's first AMQP port (rabbitmq.sh cluster, KILN_CLUSTER_PORT).")
    var clusterPort = 5682

    @Option(help: "The method every invocation calls.")
    var method = "echo-serve"

    @Flag(inversion: .prefixedNo, help: "Run the throughput bursts on the cluster and on one node.")
    var scale = true

    func run() async throws {
        try bench.requireKiln()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-bench-fleet-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        print("kiln-bench fleet: 3 workers (process backend) on \(ProcessInfo.processInfo.activeProcessorCount) cores; logs in \(folder)\n")

        var affinity = TextTable("keyed \(method) (\(keyed), \(keys) keys, \(rate)/s)", "warm hits", "submit→result p50 ms", "p99 ms", "hosts per key")
        for crossHost in [false, true] {
            let run = try await affinityRun(crossHost: crossHost, folder: folder)
            affinity.add(crossHost ? "affinity.cross_host: true" : "shared queue only", "\(formatted(run.hitRate * 100, decimals: 1))%",
                         formatted(run.latency.median / 1_000, decimals: 2), formatted(run.latency.p99 / 1_000, decimals: 2),
                         formatted(run.hostsPerKey, decimals: 2))
        }
        print(affinity.render())
        guard scale else { return }

        let cluster = try LocalClusterControl(base: clusterPort)
        try cluster.start()
        defer { cluster.stop() }
        var table = TextTable("\(burst) \(method) at once", "broker", "workers", "invocations/s", "broker CPU µs/invocation")
        for workers in 1...3 {
            let run = try await burstRun(url: cluster.urls.joined(separator: ","), brokerPIDs: cluster.pids, workers: workers, folder: folder)
            table.add("", "3-node cluster", "\(workers)", formatted(run.rate), formatted(run.brokerUs))
        }
        let single = try await burstRun(url: bench.url, brokerPIDs: [try ProcessCPU.localBrokerPID()], workers: 3, folder: folder)
        table.add("", "one node", "3", formatted(single.rate), formatted(single.brokerUs))
        print("\n" + table.render())
    }

    struct AffinityRun {
        let hitRate: Double
        let latency: Summary
        let hostsPerKey: Double
    }

    /// Three workers, keyed invocations at a steady rate: how many ran in a VM whose previous
    /// invocation had the same key.
    private func affinityRun(crossHost: Bool, folder: String) async throws -> AffinityRun {
        let names = KilnNames(prefix: "kbench-aff-\(UUID().uuidString.prefix(6).lowercased())")
        let workers = try await startWorkers(3, url: bench.url, names: names, folder: folder, extra: "affinity: {cross_host: \(crossHost)}")
        defer { for worker in workers { worker.stop() } }
        let client = try await KilnClient.connect(url: bench.url, prefix: names.prefix, connectionName: "kiln-bench fleet",
                                                  logger: Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() })
        var generator = SystemRandomNumberGenerator()
        var pending: [(key: String, result: PendingResult)] = []
        let interval = Duration.seconds(1) / rate
        var next = ContinuousClock.now
        for index in 0..<keyed {
            let key = "key-\(Int.random(in: 0..<keys, using: &generator))"
            try await Task.sleep(until: next)
            next += interval
            pending.append((key, try await client.submit(method, args: ["i": .int(Int64(index))], options: .init(affinity: key))))
        }
        var finished: [(key: String, result: InvocationResult)] = []
        for item in pending { finished.append((item.key, try await item.result.result(timeout: .seconds(300)))) }
        await client.close()
        try? await workers[0].deleteTopology(alsoDeleting: (0..<workers.count).map { names.workerQueue(host: "fleet-host-\($0)") })

        // A hit: the VM's previous invocation (in the order the VM finished them) had the same key.
        var lastKeyOfVM: [String: String] = [:]
        var hits = 0
        for item in finished.sorted(by: { $0.result.finishedAtUs < $1.result.finishedAtUs }) {
            guard let vm = item.result.vm else { continue }
            let place = "\(item.result.host ?? "")/\(vm.id)"
            if lastKeyOfVM[place] == item.key { hits += 1 }
            lastKeyOfVM[place] = item.key
        }
        let hostsByKey = Dictionary(grouping: finished, by: \.key).mapValues { Set($0.compactMap(\.result.host)).count }
        return AffinityRun(
            hitRate: Double(hits) / Double(max(1, finished.count - keys)),
            // Submit to result ready: the queue time (from the producer's submitted_at_us, so a
            // forwarded invocation's extra hop is in it) and the time in the worker that ran it.
            latency: Summary(finished.map { Double(($0.result.timing.queue ?? 0) + $0.result.timing.total) }),
            hostsPerKey: Double(hostsByKey.values.reduce(0, +)) / Double(max(1, hostsByKey.count)))
    }

    /// `workers` workers and one burst through them: invocations per second, and the brokers'
    /// CPU (user + system, all nodes) per invocation.
    private func burstRun(url: String, brokerPIDs: [pid_t], workers count: Int, folder: String) async throws -> (rate: Double, brokerUs: Double) {
        let names = KilnNames(prefix: "kbench-scale-\(UUID().uuidString.prefix(6).lowercased())")
        let workers = try await startWorkers(count, url: url, names: names, folder: folder, extra: "")
        defer { for worker in workers { worker.stop() } }
        let client = try await BenchClient(url: url, names: names, method: method, args: ["text": "fleet"])
        _ = try await client.burst(200)  // warm: pools at size, connections busy
        let cpuBefore = brokerPIDs.map(ProcessCPU.microseconds).reduce(0, +)
        let (seconds, _) = try await client.burst(burst)
        let cpuAfter = brokerPIDs.map(ProcessCPU.microseconds).reduce(0, +)
        await client.close()
        try? await workers[0].deleteTopology()
        return (Double(burst) / seconds, Double(cpuAfter - cpuBefore) / Double(burst))
    }

    private func startWorkers(_ count: Int, url: String, names: KilnNames, folder: String, extra: String) async throws -> [BenchWorker] {
        var workers: [BenchWorker] = []
        for index in 0..<count {
            workers.append(try await BenchWorker.start(
                kiln: bench.kiln, url: url, folder: folder, name: "\(names.prefix)-\(index)", statusPort: try Self.freePort(),
                configuration: bench.vmSection(backend: "process") + "\nworker: {host: fleet-host-\(index)}\n" + extra, names: names))
        }
        return workers
    }

    /// A port nothing listens on now, from the kernel.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard fd >= 0, bound else { throw BenchmarkError("no free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A 3-node cluster through `deploy/local/rabbitmq.sh cluster`.
struct LocalClusterControl {
    let base: Int

    init(base: Int) throws {
        self.base = base
    }

    var urls: [String] { (0..<3).map { "amqp://guest:guest@127.0.0.1:\(base + $0)/%2f" } }

    /// The nodes' broker PIDs.
    var pids: [pid_t] {
        (0..<3).compactMap { index in
            (try? String(contentsOfFile: ".local/rabbitmq-\(base + index)/rabbit.pid", encoding: .utf8))
                .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    func start() throws {
        let (status, output) = try runToCompletion("/usr/bin/env", ["KILN_CLUSTER_PORT=\(base)", "deploy/local/rabbitmq.sh", "cluster", "start", "3"])
        guard status == 0 else { throw BenchmarkError("the cluster did not start: \(output)") }
    }

    func stop() {
        _ = try? runToCompletion("/usr/bin/env", ["KILN_CLUSTER_PORT=\(base)", "deploy/local/rabbitmq.sh", "cluster", "stop"])
    }
}
