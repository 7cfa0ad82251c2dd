import Foundation
import KilnAMQP
import KilnTestSupport
import KilnWire
import Testing

/// The `kiln` commands as a user runs them: every command reads the worker's configuration
/// (`KILN_CONFIG`) the way the worker does, reports what it cannot use, and says what went wrong
/// without usage text when the command line itself was fine.
@Suite("Command line", .serialized)
struct CommandLineTests {
    /// The environment of a command: the test's, without its `KILN_*` variables (which would
    /// stand in for the configuration under test), plus `variables`.
    func environment(_ variables: [String: String]) -> [String: String] {
        ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KILN_") }.merging(variables) { $1 }
    }

    func kiln(_ arguments: [String], _ variables: [String: String]) throws -> (status: Int32, output: String) {
        try runToCompletion(WorkerProcess.binary, arguments, environment: environment(variables))
    }

    func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-cli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test func aMistypedVariableIsReportedAndARuntimeErrorPrintsNoUsage() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let history = folder.appendingPathComponent("history.sqlite").path
        let config = folder.appendingPathComponent("worker.yaml").path
        try "history:\n  path: \(history)\n".write(toFile: config, atomically: true, encoding: .utf8)

        let (status, output) = try kiln(["explain", "some-id"], ["KILN_CONFIG": config, "KILN_AMQP_URLL": "amqp://elsewhere"])
        #expect(status == 1, "\(output)")
        #expect(output.contains("KILN_AMQP_URLL is not a Kiln variable (did you mean KILN_AMQP_URL?)"), "\(output)")
        // explain read history.path from the configuration file, not ./.local/history.sqlite.
        #expect(output.contains("no history at \(history) (history.path of \(config))"), "\(output)")
        #expect(!output.contains("Usage:"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: history), "reading a history must not create one")

        // A usage error does print usage.
        let usage = try kiln(["pool", "status", "--worker", "no port"], [:])
        #expect(usage.status == 64 && usage.output.contains("Usage: kiln pool status"), "\(usage.output)")
    }

    @Test func aBrokerWithoutTheTopologyIsToldNotChanged() throws {
        let prefix = "cli-none-\(UUID().uuidString.prefix(6).lowercased())"
        let (status, output) = try kiln(["submit", "echo"], ["KILN_AMQP_URL": WorkerProcess.brokerURL, "KILN_AMQP_PREFIX": prefix])
        #expect(status == 1)
        #expect(output.contains("has no exchange \(prefix).invoke: no worker has declared Kiln's topology"), "\(output)")
        #expect(try BrokerAdmin.queueCounts("\(prefix).invocations") == nil, "a producer declared a queue")
    }

    /// One configuration file for the worker and every command: submit and results find the
    /// broker and prefix in it, pool status the status server, explain the history.
    @Test(.timeLimit(.minutes(4)))
    func everyCommandReadsTheWorkersConfiguration() async throws {
        let names = KilnNames(prefix: "cli-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)  // declares the topology, as a worker does
        let worker = try WorkerProcess(names: names, environment: ["KILN_VM_BACKEND": "process"])
        try await worker.waitUntilReady()
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let config = folder.appendingPathComponent("worker.yaml").path
        try """
        amqp:
          url: \(WorkerProcess.brokerURL)
          prefix: \(names.prefix)
        metrics:
          listen: 127.0.0.1:\(worker.statusPort)
        history:
          path: \(worker.historyPath)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let settings = ["KILN_CONFIG": config]

        // `kiln results --follow` into a file: each line is there while it still runs.
        let resultsFile = folder.appendingPathComponent("results.txt").path
        let follower = try SpawnedProcess([WorkerProcess.binary, "results", "--follow", "--json"], environment: environment(settings),
                                          output: resultsFile, errors: "/dev/null")
        defer { follower.stop() }
        let tap = try await BrokerAdmin.queue(startingWith: "\(names.prefix).results-tap.") { $0.consumers == 1 }
        #expect(tap != nil, "kiln results did not start consuming")

        let id = "cli-\(UUID().uuidString.prefix(8).lowercased())"
        let submitted = try kiln(["submit", "echo", "--args", #"{"text": "from the CLI"}"#, "--id", id, "--wait"], settings)
        #expect(submitted.status == 0, "\(submitted.output)")
        #expect(submitted.output.contains(#""text":"from the CLI""#), "\(submitted.output)")

        let followed = try await poll { (try? String(contentsOfFile: resultsFile, encoding: .utf8))?.contains(id) == true }
        #expect(followed, "the result line did not reach the file while kiln results ran")

        let pools = try kiln(["pool", "status"], settings)
        #expect(pools.status == 0 && pools.output.contains("pool small (process)"), "\(pools.output)")

        // The history is written after the result is published: poll for it.
        var explained = (status: Int32(1), output: "")
        _ = try await poll {
            explained = try kiln(["explain", id], settings)
            return explained.status == 0
        }
        #expect(explained.output.contains("invocation \(id): echo on process/small"), "\(explained.output)")
        #expect(explained.output.contains("candidates, best first"), "\(explained.output)")

        // What echo consumed, from the same history: a bill's CPU-seconds and GB-seconds.
        let billed = try kiln(["usage", "--method", "echo", "--since", "1h", "--json"], settings)
        #expect(billed.status == 0, "\(billed.output)")
        let line = try #require(billed.output.split(separator: "\n").last.map { Data($0.utf8) })
        let usage = try #require(try JSONSerialization.jsonObject(with: line) as? [String: Any], "\(billed.output)")
        #expect(usage["method"] as? String == "echo" && (usage["invocations"] as? Int ?? 0) >= 1, "\(usage)")
        #expect((usage["gb_seconds"] as? Double ?? 0) > 0 && usage["cpu_seconds"] is Double && usage["host_cpu_seconds"] is Double, "\(usage)")
        let table = try kiln(["usage"], settings)
        #expect(table.status == 0 && table.output.contains("GB-s") && table.output.contains("\necho "), "\(table.output)")
        let badSince = try kiln(["usage", "--since", "yesterday"], settings)
        #expect(badSince.status == 64 && badSince.output.contains("--since"), "\(badSince.output)")

        // A method the worker does not have: it names what it has and what was meant.
        let unknown = try kiln(["submit", "ecoh", "--wait"], settings)
        #expect(unknown.status == 1)
        #expect(unknown.output.contains("unknown_method: method 'ecoh' is not in this worker's image (did you mean echo?); it has "),
                "\(unknown.output)")
        #expect(unknown.output.contains("echo-serve"), "\(unknown.output)")

        // A serve-mode method that reports an error: its runtime answered and serves on.
        let failed = try kiln(["submit", "wordcount", "--args", #"{"words": 3}"#, "--wait"], settings)
        #expect(failed.status == 1)
        #expect(failed.output.contains("method_error: the method reported an error"), "\(failed.output)")
        #expect(!failed.output.contains("exited"), "\(failed.output)")

        #expect(worker.stop() == 0)
        _ = client
    }

    /// Asks `condition` every 100 ms for up to two minutes; true once it held.
    func poll(_ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}
