import Foundation
import KilnTestSupport
import Testing

/// `deploy/local/rabbitmq.sh` beside another broker on the same host: a node name in use is
/// refused at once with the variable to set, a bad port is refused before anything starts, and
/// no crash dump is left in the folder the script was started from.
@Suite("Local broker script", .serialized)
struct LocalBrokerScriptTests {
    let script = PrivateBroker().root.appendingPathComponent("deploy/local/rabbitmq.sh").path

    /// Runs the script from `folder` with `variables`.
    func start(from folder: URL, _ variables: [String]) throws -> (status: Int32, output: String) {
        try runToCompletion("/usr/bin/env", ["-C", folder.path] + variables + [script, "start"])
    }

    @Test(.timeLimit(.minutes(5)))
    func aSecondNodeOfTheSameNameIsRefusedAtOnceNamingTheVariable() throws {
        let first = PrivateBroker()
        try first.run("start")
        defer { first.stopAndRemove() }
        let second = PrivateBroker()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-broker-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }

        let (status, output) = try start(from: folder, [
            "KILN_AMQP_PORT=\(second.port)", "KILN_RABBITMQ_NODENAME=kiln-test-\(first.port)@localhost",
            "KILN_RABBITMQ_STATE=\(folder.appendingPathComponent("state").path)",
        ])
        #expect(status == 1, "\(output)")
        #expect(output.contains("a node named kiln-test-\(first.port) is already running") && output.contains("KILN_RABBITMQ_NODENAME"), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("erl_crash.dump").path))
        // The first broker is untouched.
        try first.run("status")
    }

    @Test func aPortThatIsNotANumberIsRefusedBeforeAnythingStarts() throws {
        let folder = FileManager.default.temporaryDirectory
        let (status, output) = try start(from: folder, ["KILN_AMQP_PORT=56x2"])
        #expect(status == 2 && output.contains("KILN_AMQP_PORT must be a port"), "\(status): \(output)")
    }
}
