import Foundation
import KilnTestSupport
import KilnAMQP
import Logging

/// The broker `make test` starts, and helpers for tests that talk to it.
enum TestBroker {
    static var url: String {
        ProcessInfo.processInfo.environment["KILN_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/%2f"
    }

    /// Quiet unless KILN_TEST_LOG is set, then at that level (`debug`, `info`, …) on stderr.
    static let logger: Logger = {
        guard let level = ProcessInfo.processInfo.environment["KILN_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) else {
            return Logger(label: "kiln.amqp.test") { _ in SwiftLogNoOpLogHandler() }
        }
        var logger = Logger(label: "kiln.amqp.test") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        return logger
    }()

    static func configuration(_ name: String, url: String = url) throws -> AMQPConfiguration {
        var configuration = try AMQPConfiguration(url: url)
        configuration.connectionName = "kiln-test \(name)"
        return configuration
    }

    static func connect(_ name: String, url: String = url, publishWindow: Int = 256) async throws -> AMQPConnection {
        let connection = AMQPConnection(configuration: try configuration(name, url: url), publishWindow: publishWindow, logger: logger)
        try await connection.connect()
        return connection
    }

    /// Names no other test uses.
    static func uniqueNames() -> KilnNames {
        KilnNames(prefix: "test-\(UUID().uuidString.prefix(8).lowercased())")
    }
}

struct TestTimeout: Error, CustomStringConvertible {
    let description: String
}

extension AMQPConsumer {
    /// The next `count` deliveries, or an error when they do not arrive within `timeout`.
    func take(_ count: Int, within timeout: Duration = .seconds(60)) async throws -> [AMQPDelivery] {
        try await withThrowingTaskGroup(of: [AMQPDelivery]?.self) { group in
            group.addTask {
                var received: [AMQPDelivery] = []
                for try await delivery in self {
                    received.append(delivery)
                    if received.count == count { break }
                }
                return received
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            guard let received = first, received.count == count else {
                throw TestTimeout(description: "expected \(count) deliveries within \(timeout)")
            }
            return received
        }
    }
}

/// Runs `deploy/local/rabbitmq.sh` with its own port, node and state, for tests that stop and
/// restart a broker without disturbing the shared one.
struct PrivateBroker {
    let port: Int
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A broker on ports free now: AMQP on `port`, the management UI on `port + 10000` and
    /// Erlang distribution on `port + 20000` (as `rabbitmq.sh` lays them out), so AMQP's port
    /// is drawn below 45536 rather than left to the kernel.
    init() {
        var generator = SystemRandomNumberGenerator()
        var candidate = 20_000
        for _ in 0..<200 {
            candidate = Int.random(in: 15_000..<30_000, using: &generator)
            if [candidate, candidate + 10_000, candidate + 20_000].allSatisfy(Self.isFree) { break }
        }
        port = candidate
    }

    /// True when nothing listens on 127.0.0.1:`port`.
    static func isFree(_ port: Int) -> Bool { portIsFree(port) }

    var url: String { "amqp://guest:guest@127.0.0.1:\(port)/%2f" }

    /// The broker's state folder (its Mnesia, logs and pid file).
    var state: URL { root.appendingPathComponent(".local/rabbitmq-test-\(port)") }

    /// Stops the broker and removes its state.
    func stopAndRemove() {
        try? run("stop")
        try? FileManager.default.removeItem(at: state)
    }

    /// Runs the script with this broker's port, node and state, and waits for it.
    func run(_ action: String) throws {
        let environment = [
            "KILN_AMQP_PORT=\(port)",
            "KILN_RABBITMQ_NODENAME=kiln-test-\(port)@localhost",
            "KILN_RABBITMQ_STATE=\(state.path)",
        ]
        let (status, output) = try runToCompletion("/usr/bin/env", environment + [root.appendingPathComponent("deploy/local/rabbitmq.sh").path, action])
        guard status == 0 else {
            throw TestTimeout(description: "rabbitmq.sh \(action) on port \(port) exited with status \(status): \(output)")
        }
    }

    /// Kills the broker with SIGKILL and waits until it is gone (or a zombie).
    func kill9() throws {
        let pid = try pid()
        kill(pid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let state = stat.split(separator: ")").last?.split(separator: " ").first, state != "Z" else { return }
            usleep(20_000)
        }
        throw TestTimeout(description: "broker pid \(pid) survived SIGKILL for 10 s")
    }

    /// The broker's Erlang VM, for SIGSTOP/SIGCONT.
    func pid() throws -> pid_t {
        let file = root.appendingPathComponent(".local/rabbitmq-test-\(port)/rabbit.pid")
        let text = try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let pid = pid_t(text) else { throw TestTimeout(description: "no pid in \(file.path)") }
        return pid
    }
}
