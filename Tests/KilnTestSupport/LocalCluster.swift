import Foundation

/// A RabbitMQ cluster of the test's own on 127.0.0.1, started and stopped through
/// `deploy/local/rabbitmq.sh cluster` on consecutive free ports (AMQP from ``base``, Erlang
/// distribution 20,000 above), its state under `.local/rabbitmq-PORT`, removed by ``remove()``.
public struct LocalCluster: Sendable {
    /// The first node's AMQP port.
    public let base: Int
    public let size: Int

    static let script = repositoryRoot.appendingPathComponent("deploy/local/rabbitmq.sh").path

    /// Picks `size` consecutive free ports; nothing starts yet.
    public init(size: Int) throws {
        self.size = size
        for _ in 0..<200 {
            let candidate = Int.random(in: 15_000..<25_000)
            if (0..<size).flatMap({ [candidate + $0, candidate + $0 + 20_000] }).allSatisfy(portIsFree) {
                base = candidate
                return
            }
        }
        throw HelperFailure("no \(size) consecutive free ports")
    }

    /// The AMQP URLs of the nodes, in port order.
    public var urls: [String] {
        (0..<size).map { "amqp://guest:guest@127.0.0.1:\(base + $0)/%2f" }
    }

    /// The node name of node `index`.
    public func nodeName(_ index: Int) -> String { "kiln-\(base + index)@localhost" }

    /// `rabbitmq.sh cluster ARGUMENTS` for this cluster: exit status and output.
    @discardableResult
    public func cluster(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runToCompletion("/usr/bin/env", ["KILN_CLUSTER_PORT=\(base)", Self.script, "cluster"] + arguments)
    }

    /// Starts every node not running (all of them the first time) and waits until all are in.
    public func start() throws {
        let (status, output) = try cluster(["start", "\(size)"])
        guard status == 0 else { throw HelperFailure("cluster start \(size) exited with \(status): \(output)") }
    }

    /// `rabbitmqctl ARGUMENTS` on node `index`.
    public func ctl(_ index: Int, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let port = base + index
        return try runToCompletion("/usr/bin/env", [
            "KILN_AMQP_PORT=\(port)", "KILN_RABBITMQ_NODENAME=\(nodeName(index))",
            "KILN_RABBITMQ_STATE=\(repositoryRoot.appendingPathComponent(".local/rabbitmq-\(port)").path)", Self.script, "ctl",
        ] + arguments)
    }

    /// The PID of node `index`'s broker, when it runs.
    public func pid(of index: Int) -> pid_t? {
        let file = repositoryRoot.appendingPathComponent(".local/rabbitmq-\(base + index)/rabbit.pid").path
        guard let text = try? String(contentsOfFile: file, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              kill(pid, 0) == 0 else { return nil }
        return pid
    }

    /// SIGKILLs node `index`'s broker, as a crash or a lost host ends it.
    public func killNode(_ index: Int) throws {
        guard let pid = pid(of: index) else { throw HelperFailure("node \(nodeName(index)) is not running") }
        kill(pid, SIGKILL)
        while kill(pid, 0) == 0 { usleep(10_000) }
    }

    /// Cuts node `index` off from the others (`rabbitmq.sh cluster partition`): with
    /// pause_minority, a node alone against two pauses.
    public func partition(_ index: Int) throws {
        let (status, output) = try cluster(["partition", "\(base + index)"])
        guard status == 0 else { throw HelperFailure("cluster partition exited with \(status): \(output)") }
    }

    /// Lets node `index` reach the others again (`rabbitmq.sh cluster heal`).
    public func heal(_ index: Int) throws {
        let (status, output) = try cluster(["heal", "\(base + index)"])
        guard status == 0 else { throw HelperFailure("cluster heal exited with \(status): \(output)") }
    }

    /// Whether node `index` runs RabbitMQ (false while it is paused, or down).
    public func isServing(_ index: Int) -> Bool {
        (try? ctl(index, ["eval", "rabbit:is_running()."]))?.output.trimmingCharacters(in: .whitespacesAndNewlines) == "true"
    }

    /// Stops every node and removes their state.
    public func remove() {
        _ = try? cluster(["stop"])
        for port in base..<(base + size) {
            try? FileManager.default.removeItem(at: repositoryRoot.appendingPathComponent(".local/rabbitmq-\(port)"))
        }
        try? FileManager.default.removeItem(at: repositoryRoot.appendingPathComponent(".local/rabbitmq-cluster-\(base)"))
    }
}

/// True when nothing listens on 127.0.0.1:`port` (a bind to it succeeds).
public func portIsFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
