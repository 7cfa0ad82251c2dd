import ArgumentParser
import Foundation
import KilnAMQP
import KilnClient
import KilnPool
import KilnTools
import KilnVM
import KilnWire
import Logging
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `kiln demo`: starts a worker, submits a mix of the example methods, and shows the results
/// and what the worker reported, then stops the worker. `make demo` prepares everything first
/// (packages, build, guest image, a local broker).
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker, submit sample invocations, show results and telemetry, stop.")

    @OptionGroup var broker: BrokerOptions

    @Option(help: "Where the demo worker's status server listens.")
    var statusPort = 9471

    @Option(help: "The worker's log file.")
    var workerLog = ".local/demo-worker.log"

    @Option(help: "The demo worker's execution history (its own, so that no other worker's executions train its model).")
    var historyPath = ".local/demo-history.sqlite"

    func run() async throws {
        Kiln.bootstrapLogging()
        let started = ContinuousClock.now
        let logger = Logger(label: "kiln.demo")
        let (url, prefix) = try broker.endpoint()
        let names = KilnNames(prefix: prefix)
        // The demo's own taps use the first node (the local broker `make demo` starts).
        var amqp = try AMQPConfiguration.endpoints(url)[0]
        amqp.connectionName = "kiln demo"
        let connection = AMQPConnection(configuration: amqp, logger: logger)
        step("connecting to \(amqp.redactedURL)")
        try await connection.connect()
        try await connection.declare(.kiln(names))
        let (resultsConnection, results) = try await tap(amqp, exchange: names.resultsExchange, name: "results", logger: logger)
        let (telemetryConnection, telemetry) = try await tap(amqp, exchange: names.telemetryExchange, name: "telemetry", logger: logger)
        let collector = Collector()
        let reading = Task { try await collector.read(results: results, telemetry: telemetry) }

        step("starting a worker (log: \(workerLog))")
        let worker = try startWorker(url: url, prefix: prefix)
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        let status = "http://127.0.0.1:\(statusPort)"
        try await waitUntilHealthy(status, worker: worker)
        let pools = try await PoolCommand.fetch(status)
        step("worker ready: \(pools.map { "\($0.profile) pool on \($0.backend), \($0.idle) idle" }.joined(separator: "; "))")

        let plan = DemoPlan.invocations
        step("submitting \(plan.count) invocations in \(DemoPlan.waves.count) waves")
        for (index, wave) in DemoPlan.waves.enumerated() {
            for invocation in wave {
                try await connection.publish(AMQPMessage(
                    exchange: names.invokeExchange, routingKey: invocation.method, body: try MessagePackEncoder().encode(invocation),
                    properties: .msgpack(messageID: invocation.id)))
            }
            let expected = DemoPlan.waves.prefix(index + 1).reduce(0) { $0 + $1.count }
            try await collector.waitForResults(expected, timeout: .seconds(120))
            step("wave \(index + 1): \(wave.count) results in")
        }
        // host.sample arrives every second: give it a moment to report the quiet pool.
        try await Task.sleep(for: .milliseconds(1_500))

        print("")
        print(DemoReport.results(collector.results, order: plan.map(\.id)))
        print("")
        print(DemoReport.telemetry(collector.events))
        print("")
        for pool in try await PoolCommand.fetch(status) { print(PoolCommand.render(pool)) }
        print("")
        try await showFleet(amqp, names: names, since: started.duration(to: .now) + .seconds(2), logger: logger)
        print("")

        step("stopping the worker (SIGTERM: drain, then destroy the VMs)")
        kill(worker.processIdentifier, SIGTERM)
        worker.waitUntilExit()
        step("worker exited with status \(worker.terminationStatus)")
        reading.cancel()
        for open in [connection, resultsConnection, telemetryConnection] { await open.close(grace: .seconds(1)) }
    }

    /// The fleet as `kiln fleet status` shows it, from the samples since the demo began (the
    /// stream also holds the workers of earlier demos, gone now).
    private func showFleet(_ amqp: AMQPConfiguration, names: KilnNames, since: Duration, logger: Logger) async throws {
        let connection = AMQPConnection(configuration: amqp, logger: logger)
        try await connection.connect()
        let view = try await FleetReader.read(from: connection, names: names, lookBack: since, window: .seconds(1))
        await connection.close(grace: .zero)
        print("the fleet (kiln fleet status):")
        print(FleetFormatter.header)
        let now = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        for entry in view.entries(nowUs: now, goneAfterUs: 5_000_000) { print(FleetFormatter.row(entry)) }
    }

    private func step(_ text: String) {
        print("==> \(text)")
    }

    /// A temporary queue bound to `exchange` with `#`, consumed on a connection of its own.
    private func tap(
        _ configuration: AMQPConfiguration, exchange: String, name: String, logger: Logger
    ) async throws -> (AMQPConnection, AMQPConsumer) {
        var configuration = configuration
        configuration.connectionName = "kiln demo \(name)"
        let connection = AMQPConnection(configuration: configuration, logger: logger)
        try await connection.connect()
        let queue = "kiln.demo-\(name).\(UUID().uuidString.prefix(8).lowercased())"
        try await connection.declare(AMQPTopology(
            queues: [.init(name: queue, durable: false, exclusive: true, autoDelete: true)],
            bindings: [.init(queue: queue, exchange: exchange, routingKey: "#")]))
        return (connection, try await connection.consume(queue: queue, prefetch: 500))
    }

    private func startWorker(url: String, prefix: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        process.arguments = ["worker"]
        var environment = ProcessInfo.processInfo.environment
        if let file = broker.settings.file { environment["KILN_CONFIG"] = file }
        environment["KILN_AMQP_URL"] = url
        environment["KILN_AMQP_PREFIX"] = prefix
        environment["KILN_METRICS_LISTEN"] = "127.0.0.1:\(statusPort)"
        environment["KILN_POOL_SIZING_INTERVAL_S"] = "1"
        // The demo's own history: a worker run by hand (or a test) never mixes its executions in.
        environment["KILN_HISTORY_PATH"] = historyPath
        environment["KILN_LOG_LEVEL"] = environment["KILN_LOG_LEVEL"] ?? "info"
        process.environment = environment
        _ = FileManager.default.createFile(atPath: workerLog, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: workerLog))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        return process
    }

    private func waitUntilHealthy(_ status: String, worker: Process) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            guard worker.isRunning else {
                throw CommandFailure("the worker exited with status \(worker.terminationStatus); see \(workerLog)")
            }
            if let (_, response) = try? await URLSession.shared.data(from: URL(string: status + "/healthz")!),
               (response as? HTTPURLResponse)?.statusCode == 200 {
                return
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw CommandFailure("the worker did not become healthy within 120 s; see \(workerLog)")
    }
}

/// The invocations the demo submits.
enum DemoPlan {
    static let waves: [[Invocation]] = {
        func invocation(_ method: String, _ args: MessagePackValue, deadline: UInt64? = nil, affinity: String? = nil) -> Invocation {
            Invocation(
                id: "demo-\(UUID().uuidString.prefix(8).lowercased())", method: method, args: args, deadlineMs: deadline,
                affinity: affinity.map { Affinity(key: $0) }, submittedAtUs: UInt64(Date().timeIntervalSince1970 * 1_000_000))
        }
        let first: [Invocation] = [
            invocation("echo", ["text": "hello from kiln"]),
            invocation("sha256", ["data": "the quick brown fox"]),
            invocation("sleep", ["ms": 50]),
            invocation("fail", ["message": "asked to fail"]),
            invocation("sleep", ["ms": 5_000], deadline: 500),
            invocation("nonexistent", nil),
        ]
        let second: [Invocation] = (0..<6).map { index in
            invocation(index % 2 == 0 ? "echo" : "sha256", ["text": .string("wave two #\(index)"), "data": "abc"], affinity: "user-\(index % 2)")
        }
        let third: [Invocation] = [
            // Serve mode: the runtime starts once per VM (wordcount's at warm-up) and stays up for the next calls.
            invocation("wordcount", ["text": "a runtime that stays up between calls"]),
            invocation("echo-serve", ["text": "served without starting a process"]),
            invocation("echo-serve", ["text": "and again"]),
            invocation("burn", ["ms": 200]),
            invocation("echo", ["text": "warm again"], affinity: "user-0"),
            invocation("sha256", ["data": .binary(Array(repeating: 7, count: 4_096))], affinity: "user-1"),
            invocation("sleep", ["ms": 20]),
        ]
        // Python on a root file system of its own (Debian's python3 and Pillow), started warm: the
        // first call waits for a medium VM, the next ones find it.
        let picture = PNGImage.make(width: 320, height: 240) { x, y in (UInt8(x % 256), UInt8(y % 256), 160) }
        let fourth: [Invocation] = [
            invocation("py-echo", ["text": "hello from python in a micro-VM"]),
            invocation("py-thumbnail", ["image": .binary(picture), "size": 64]),
            invocation("py-echo", ["text": "warm"]),
        ]
        return [first, second, third, fourth]
    }()

    static var invocations: [Invocation] { waves.flatMap { $0 } }
}

/// Results and telemetry read from the taps.
final class Collector: @unchecked Sendable {
    private let lock = NSLock()
    private var collectedResults: [String: InvocationResult] = [:]
    private var collectedEvents: [TelemetryEvent] = []

    var results: [String: InvocationResult] { lock.withLock { collectedResults } }
    var events: [TelemetryEvent] { lock.withLock { collectedEvents } }

    func read(results: AMQPConsumer, telemetry: AMQPConsumer) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await delivery in results {
                    try delivery.ack()
                    guard let result = try? MessagePackDecoder().decode(InvocationResult.self, from: delivery.body) else { continue }
                    self.lock.withLock { self.collectedResults[result.id] = result }
                }
            }
            group.addTask {
                for try await delivery in telemetry {
                    try delivery.ack()
                    guard let event = try? MessagePackDecoder().decode(TelemetryEvent.self, from: delivery.body) else { continue }
                    self.lock.withLock { self.collectedEvents.append(event) }
                }
            }
            try await group.waitForAll()
        }
    }

    func waitForResults(_ count: Int, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while results.count < count {
            guard ContinuousClock.now < deadline else {
                throw CommandFailure("only \(results.count) of \(count) results arrived within \(timeout.text)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// The demo's tables.
enum DemoReport {
    static func results(_ results: [String: InvocationResult], order: [String]) -> String {
        var lines = ["results (predicted is the scheduler's estimate before the run; exec and total are measured)", ResultFormatter.header]
        for id in order { if let result = results[id] { lines.append(ResultFormatter.row(result)) } }
        let statuses = Dictionary(grouping: results.values, by: \.status.rawValue).mapValues(\.count)
        lines.append("statuses: " + statuses.keys.sorted().map { "\($0) \(statuses[$0]!)" }.joined(separator: ", "))
        return lines.joined(separator: "\n")
    }

    static func telemetry(_ events: [TelemetryEvent]) -> String {
        var lines = ["telemetry (\(events.count) events on kiln.telemetry)"]
        let kinds = Dictionary(grouping: events, by: \.payload.kind).mapValues(\.count)
        lines.append("  by kind: " + kinds.keys.sorted().map { "\($0) \(kinds[$0]!)" }.joined(separator: ", "))
        var created: [String: [UInt64]] = [:]
        var destroyed: [String: Int] = [:]
        var resized: [String] = []
        var lastSample: TelemetryEvent.HostSample?
        for event in events {
            switch event.payload {
            case .vmCreated(let vm): created[vm.mode ?? "?", default: []].append(vm.bootUs)
            case .vmDestroyed(let vm): destroyed[vm.reason, default: 0] += 1
            case .poolResized(let pool): resized.append("\(pool.profile) \(pool.from) -> \(pool.to): \(pool.reason)")
            case .hostSample(let sample): lastSample = sample
            default: break
            }
        }
        for (mode, times) in created.sorted(by: { $0.key < $1.key }) {
            let sorted = times.sorted()
            lines.append(String(format: "  vm.created by %@: %d, median %.1f ms (min %.1f, max %.1f)",
                                mode, sorted.count, Double(sorted[sorted.count / 2]) / 1_000, Double(sorted.first!) / 1_000, Double(sorted.last!) / 1_000))
        }
        if !destroyed.isEmpty {
            lines.append("  vm.destroyed: " + destroyed.keys.sorted().map { "\($0) \(destroyed[$0]!)" }.joined(separator: ", "))
        }
        for resize in resized.suffix(4) { lines.append("  pool.resized \(resize)") }
        if let sample = lastSample {
            lines.append(String(format: "  host.sample: cpu %.0f%%, %d MiB available, memory pressure %.2f, %d idle / %d busy VMs",
                                sample.cpuUtil * 100, sample.memAvailableMB, sample.memPressure, sample.vmsIdle, sample.vmsBusy))
        }
        return lines.joined(separator: "\n")
    }
}
