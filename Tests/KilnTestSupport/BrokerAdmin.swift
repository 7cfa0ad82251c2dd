import Foundation

/// The repository's root folder (the tests run from anywhere).
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A failure of a test helper, with what went wrong.
public struct HelperFailure: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Runs a program to completion (in `directory`, else the current folder) and returns its exit
/// status and output (stdout and stderr).
public func runToCompletion(_ executable: String, _ arguments: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
                            in directory: String? = nil)
    throws -> (status: Int32, output: String)
{
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-spawn-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    // In another folder through a shell's cd (Glibc's module lacks posix_spawn's addchdir).
    let command = directory.map { ["/bin/sh", "-c", #"cd -- "$1" && shift && exec "$@""#, "sh", $0, executable] } ?? [executable]
    let argv: [UnsafeMutablePointer<CChar>?] = (command + arguments).map { strdup($0) } + [nil]
    let variables: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        argv.forEach { free($0) }
        variables.forEach { free($0) }
    }
    var pid: pid_t = 0
    guard posix_spawn(&pid, command[0], &actions, nil, argv, variables) == 0 else {
        throw HelperFailure("cannot run \(executable)")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // The exit status, or 128 + the signal that ended it, as a shell reports them.
    let exit = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (exit, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
}

/// The permissions `deploy/rabbitmq/definitions.json` gives a user: what a test grants the
/// users it makes, so that it checks the shipped patterns.
public struct Permissions: Decodable, Sendable {
    public var user: String
    public var configure: String
    public var write: String
    public var read: String

    /// The shipped permissions of `user` (`kiln-worker`, `kiln-producer`).
    public static func shipped(for user: String) throws -> Permissions {
        struct Definitions: Decodable { var permissions: [Permissions] }
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("deploy/rabbitmq/definitions.json"))
        guard let found = try JSONDecoder().decode(Definitions.self, from: data).permissions.first(where: { $0.user == user }) else {
            throw HelperFailure("definitions.json gives \(user) no permissions")
        }
        return found
    }
}

/// Users and virtual hosts on the test broker, through `deploy/local/rabbitmq.sh ctl` (the
/// broker `make test` starts, found by the same environment).
public enum BrokerAdmin {
    /// Runs `rabbitmqctl` on the test broker.
    @discardableResult
    public static func ctl(_ arguments: [String]) throws -> String {
        let (status, output) = try runToCompletion(repositoryRoot.appendingPathComponent("deploy/local/rabbitmq.sh").path, ["ctl"] + arguments)
        guard status == 0 else { throw HelperFailure("rabbitmqctl \(arguments.prefix(2).joined(separator: " ")) exited with \(status): \(output)") }
        return output
    }

    /// What the broker counts for a queue (its statistics lag its state by a moment: poll).
    public struct QueueCounts: Sendable, Equatable, CustomStringConvertible {
        /// Messages waiting for a consumer.
        public var ready: Int
        /// Messages delivered and not yet settled.
        public var unacknowledged: Int
        /// Consumers subscribed.
        public var consumers: Int

        public var description: String { "ready \(ready), unacknowledged \(unacknowledged), consumers \(consumers)" }
    }

    /// The broker's counts for `queue`; nil when it has no such queue.
    public static func queueCounts(_ queue: String, vhost: String = "/") throws -> QueueCounts? {
        let output = try ctl(["list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name", "messages_ready", "messages_unacknowledged", "consumers"])
        for line in output.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard fields.count == 4, fields[0] == queue, let ready = Int(fields[1]), let unacked = Int(fields[2]),
                  let consumers = Int(fields[3]) else { continue }
            return QueueCounts(ready: ready, unacknowledged: unacked, consumers: consumers)
        }
        return nil
    }

    /// The name and counts of a queue whose name starts with `prefix` once `condition` holds
    /// for it, asked every 100 ms for up to `timeout`; nil when none did.
    public static func queue(startingWith prefix: String, vhost: String = "/", timeout: Duration = .seconds(60),
                             until condition: (QueueCounts) -> Bool) async throws -> (name: String, counts: QueueCounts)? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let output = try ctl(["list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name", "messages_ready", "messages_unacknowledged", "consumers"])
            for line in output.split(separator: "\n") {
                let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
                guard fields.count == 4, fields[0].hasPrefix(prefix), let ready = Int(fields[1]), let unacked = Int(fields[2]),
                      let consumers = Int(fields[3]) else { continue }
                let counts = QueueCounts(ready: ready, unacknowledged: unacked, consumers: consumers)
                if condition(counts) { return (String(fields[0]), counts) }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    /// Asks for `queue`'s counts until `condition` holds for them or `timeout` passes; returns
    /// the last counts seen.
    public static func queueCounts(_ queue: String, vhost: String = "/", timeout: Duration = .seconds(60),
                                   until condition: (QueueCounts) -> Bool) async throws -> QueueCounts? {
        let deadline = ContinuousClock.now + timeout
        var counts = try queueCounts(queue, vhost: vhost)
        while counts.map(condition) != true, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            counts = try queueCounts(queue, vhost: vhost)
        }
        return counts
    }

    /// A new virtual host, and a user in it for each of `users` with the shipped permissions and
    /// a fresh random password; returns the passwords by user. Guest may use the host too.
    public static func makeVirtualHost(_ vhost: String, users: [(name: String, permissionsOf: String)]) throws -> [String: String] {
        try ctl(["add_vhost", vhost])
        try ctl(["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"])
        var passwords: [String: String] = [:]
        for (name, role) in users {
            let password = "pw-\(UUID().uuidString)"
            let permissions = try Permissions.shipped(for: role)
            try ctl(["add_user", name, password])
            try ctl(["set_permissions", "-p", vhost, name, permissions.configure, permissions.write, permissions.read])
            passwords[name] = password
        }
        return passwords
    }

    /// Removes what ``makeVirtualHost(_:users:)`` made.
    public static func remove(_ vhost: String, users: [String]) {
        for user in users { _ = try? ctl(["delete_user", user]) }
        _ = try? ctl(["delete_vhost", vhost])
    }
}
