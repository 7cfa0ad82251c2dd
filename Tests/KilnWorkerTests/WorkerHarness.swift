import Foundation
import KilnAMQP
import KilnTestSupport
import KilnWire
import Logging
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A `kiln worker` process for end-to-end tests: the real binary, the broker `make test`
/// starts, real VMs; its own topology prefix so that tests do not share queues.
final class WorkerProcess: @unchecked Sendable {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var binary: String { ProcessInfo.processInfo.environment["KILN_BINARY"] ?? root.appendingPathComponent(".build/debug/kiln").path }
    static var brokerURL: String { ProcessInfo.processInfo.environment["KILN_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/%2f" }

    let names: KilnNames
    /// The port the worker's status server bound (it is given port 0); known once
    /// ``waitUntilReady(timeout:)`` returned.
    private(set) var statusPort = 0
    let log: String
    /// The worker's execution history: a file of its own in a temporary folder, never the
    /// `.local/history.sqlite` a developer's worker or `make demo` reads (unless the test gives
    /// it one to share, as `KILN_HISTORY_PATH`).
    let historyPath: String
    private let process: SpawnedProcess
    /// The worker's process id; 0 once it has exited.
    var pid: pid_t { process.pid }

    /// The temporary folder of this test run's histories, removed when the tests exit.
    static let historyRoot: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-test-histories-\(getpid())").path
        atexit { try? FileManager.default.removeItem(atPath: WorkerProcess.historyRoot) }
        return path
    }()

    /// A fresh temporary history file's path.
    static func temporaryHistory() throws -> String {
        let folder = URL(fileURLWithPath: historyRoot).appendingPathComponent(UUID().uuidString.prefix(8).lowercased())
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder.appendingPathComponent("history.sqlite").path
    }

    /// Starts a worker with `environment` on top of the test defaults; its status server on a
    /// port the kernel picks.
    init(names: KilnNames, environment: [String: String] = [:]) throws {
        self.names = names
        historyPath = try environment["KILN_HISTORY_PATH"] ?? Self.temporaryHistory()
        let logs = Self.root.appendingPathComponent(".local/test-logs")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        log = logs.appendingPathComponent("worker-\(names.prefix)-\(UUID().uuidString.prefix(4)).log").path
        var variables = ProcessInfo.processInfo.environment
        variables["KILN_AMQP_URL"] = Self.brokerURL
        variables["KILN_AMQP_PREFIX"] = names.prefix
        variables["KILN_METRICS_LISTEN"] = "127.0.0.1:0"
        variables["KILN_VM_IMAGE_CACHE"] = Self.root.appendingPathComponent(".local/images").path
        variables["KILN_POOL_SIZING_INTERVAL_S"] = "1"
        variables["KILN_LOG_LEVEL"] = "info"
        variables["KILN_HISTORY_PATH"] = historyPath
        for (key, value) in environment { variables[key] = value }
        process = try SpawnedProcess([Self.binary, "worker"], environment: variables, output: log)
    }

    /// Waits until the worker's status server says it is healthy (its port read from the line
    /// the worker logs when it listens).
    func waitUntilReady(timeout: Duration = .seconds(90)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = process.exited() {
                throw HarnessError("the worker exited (status \(status)) before it was ready: \(tail())")
            }
            if statusPort == 0, let port = Self.listeningPort(in: logText) { statusPort = port }
            if statusPort != 0, let health = try? await httpGet("/healthz"), health.contains("\"ok\"") { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw HarnessError("the worker was not ready within \(timeout): \(tail())")
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `timeout`); returns the exit status.
    @discardableResult
    func stop(timeout: Duration = .seconds(60)) -> Int32 {
        process.stop(timeout: timeout)
    }

    /// SIGKILL: the worker ends without draining, as in a crash.
    func kill() {
        process.kill()
    }

    /// The port in the worker's "status server listening on [IPv4]127.0.0.1/127.0.0.1:PORT".
    static func listeningPort(in log: String) -> Int? {
        guard let line = log.split(separator: "\n").first(where: { $0.contains("status server listening on") }),
              let colon = line.lastIndex(of: ":") else { return nil }
        return Int(line[line.index(after: colon)...].prefix { $0.isNumber })
    }

    /// A GET on the worker's status server.
    func httpGet(_ path: String) async throws -> String {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(statusPort)\(path)")!)
        return String(decoding: data, as: UTF8.self)
    }

    /// Everything the worker logged so far.
    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    func tail() -> String {
        String(logText.suffix(2_000))
    }

}

struct HarnessError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// A producer and a results reader on the test broker.
final class TestClient: Sendable {
    let names: KilnNames
    let connection: AMQPConnection
    let resultsConnection: AMQPConnection
    let resultsQueue: String
    /// Every result read so far, by a task of the client's.
    let box = ResultBox()
    private let reader: Task<Void, any Error>

    static let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }

    init(names: KilnNames) async throws {
        self.names = names
        var configuration = try AMQPConfiguration(url: WorkerProcess.brokerURL)
        configuration.connectionName = "kiln-test producer \(names.prefix)"
        connection = AMQPConnection(configuration: configuration, publishWindow: 1_000, logger: Self.logger)
        try await connection.connect()
        try await connection.declare(.kiln(names))
        configuration.connectionName = "kiln-test results \(names.prefix)"
        resultsConnection = AMQPConnection(configuration: configuration, logger: Self.logger)
        try await resultsConnection.connect()
        resultsQueue = "\(names.prefix).results-tap"
        try await resultsConnection.declare(AMQPTopology(
            queues: [.init(name: resultsQueue, durable: false, autoDelete: false)],
            bindings: [.init(queue: resultsQueue, exchange: names.resultsExchange, routingKey: "#")]))
        let results = try await resultsConnection.consume(queue: resultsQueue, prefetch: 1_000)
        let box = self.box
        reader = Task {
            for try await delivery in results {
                try delivery.ack()
                box.add(try MessagePackDecoder().decode(InvocationResult.self, from: delivery.body))
            }
        }
    }

    /// Publishes `invocation` (optionally asking for a reply on `replyTo`).
    func submit(_ invocation: Invocation, replyTo: String? = nil) async throws {
        try await connection.publish(AMQPMessage(
            exchange: names.invokeExchange, routingKey: invocation.method, body: try MessagePackEncoder().encode(invocation),
            properties: .msgpack(messageID: invocation.id, correlationID: invocation.id, replyTo: replyTo)))
    }

    /// Results until every id in `ids` has one, or the timeout; keyed by id. Results of
    /// redeliveries that an earlier worker had already answered count as duplicates.
    func collect(_ ids: Set<String>, timeout: Duration) async throws -> (results: [String: InvocationResult], duplicates: Int) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (results, duplicates) = box.snapshot
            if ids.isSubset(of: results.keys) { return (results.filter { ids.contains($0.key) }, duplicates) }
            guard ContinuousClock.now < deadline else {
                throw HarnessError("only \(ids.filter { results[$0] != nil }.count) of \(ids.count) results within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func close() async {
        reader.cancel()
        try? await connection.deleteQueue(resultsQueue)
        try? await connection.deleteQueue(names.invocationsQueue)
        try? await connection.deleteQueue(names.deadQueue)
        await resultsConnection.close(grace: .zero)
        await connection.close(grace: .seconds(1))
    }
}

/// Results seen so far, shared with the reading task.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [String: InvocationResult] = [:]
    private var duplicates = 0

    func add(_ result: InvocationResult) {
        lock.withLock {
            if results[result.id] != nil { duplicates += 1 }
            results[result.id] = result
        }
    }

    var snapshot: ([String: InvocationResult], Int) { lock.withLock { (results, duplicates) } }
}
