import Foundation
import KilnAMQP
import Logging
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A `kiln worker` a benchmark runs: its own configuration file, topology prefix, status port
/// and history, started from a given executable and stopped (SIGTERM, so that it drains and
/// writes its history) by PID.
struct BenchWorker {
    let pid: pid_t
    let names: KilnNames
    let url: String
    let statusPort: Int
    let log: String
    /// The worker's execution history.
    let historyPath: String

    /// Writes `folder/name.yaml` (the broker, the topology's prefix, the status port and
    /// history, then `configuration`), starts the worker and waits until it is healthy.
    /// - Parameters:
    ///   - names: The topology (a fresh prefix when `nil`); a worker started again takes the same.
    ///   - history: The history file (`folder/name-history.sqlite` when `nil`).
    ///   - environment: Variables for the worker beyond the log level.
    static func start(
        kiln: String, url: String, folder: String, name: String, statusPort: Int, configuration: String, names: KilnNames? = nil,
        history: String? = nil, environment extra: [String: String] = [:]
    ) async throws -> BenchWorker {
        let names = names ?? KilnNames(prefix: "kbench-\(UUID().uuidString.prefix(6).lowercased())")
        let configurationPath = "\(folder)/\(name).yaml"
        let historyPath = history ?? "\(folder)/\(name)-history.sqlite"
        let yaml = """
            amqp: {url: "\(url)", prefix: \(names.prefix)}
            history: {path: "\(historyPath)"}
            metrics: {listen: "127.0.0.1:\(statusPort)"}
            \(configuration)
            """
        try yaml.write(toFile: configurationPath, atomically: true, encoding: .utf8)
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KILN_") }
        environment["KILN_LOG_LEVEL"] = "warning"
        for (key, value) in extra { environment[key] = value }
        let log = "\(folder)/worker-\(name).log"
        let pid = try spawn(kiln, ["worker", "--config", configurationPath], outputPath: log, mergeErrors: true, environment: environment)
        let worker = BenchWorker(pid: pid, names: names, url: url, statusPort: statusPort, log: log, historyPath: historyPath)
        do {
            try await worker.waitUntilHealthy()
        } catch {
            worker.stop()
            throw error
        }
        return worker
    }

    private func waitUntilHealthy() async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw BenchmarkError("the worker exited before it was ready; see \(log)")
            }
            if let health = try? await httpGet("/healthz"), health.contains("\"ok\"") { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw BenchmarkError("the worker was not ready within 120 s; see \(log)")
    }

    /// A GET on the worker's status port.
    func httpGet(_ path: String) async throws -> String {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(statusPort)\(path)")!)
        return String(decoding: data, as: UTF8.self)
    }

    /// SIGTERM, and SIGKILL a minute later if it has not drained by then.
    func stop() {
        terminate(pid, timeout: .seconds(60))
    }

    /// Removes the queues and exchanges of the worker's prefix, and `queues`.
    func deleteTopology(alsoDeleting queues: [String] = []) async throws {
        let connection = AMQPConnection(endpoints: try AMQPConfiguration.endpoints(url), logger: Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() })
        try await connection.connect()
        for queue in [names.invocationsQueue, names.deadQueue, names.fleetStream] + queues { try await connection.deleteQueue(queue) }
        for exchange in [names.invokeExchange, names.resultsExchange, names.telemetryExchange, names.deadExchange, names.affinityExchange] {
            try await connection.deleteExchange(exchange)
        }
        await connection.close(grace: .zero)
    }
}
