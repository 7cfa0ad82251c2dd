import ArgumentParser
import Foundation
import KilnAMQP
import KilnWire
import Logging

/// `kiln-bench soak`: a steady load on a real worker for N minutes while, in turns, a VM is
/// killed, the broker restarted, and the worker SIGKILLed and started again. At the end every
/// invocation is accounted for (one result each, a second only as a redelivery, with
/// `attempt > 1`, or where the producer sent again what a dropped connection left unconfirmed),
/// the worker's memory and descriptors over time are printed, and what is left behind (VMs,
/// cgroups, run folders) is counted: nothing. A result may also come twice byte for byte — the
/// same attempt, worker and finishing time — when the broker restarted before it confirmed it
/// and the worker published it again: at-least-once publishing; those are counted apart.
struct SoakBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Hold a load on a real worker while killing VMs, the broker and the worker; account for every invocation."
    )

    @OptionGroup var bench: WorkerBenchOptions

    @Option(help: "Minutes of load.")
    var minutes = 30.0

    @Option(help: "Seconds between faults (they take turns: a VM, the broker, the worker).")
    var faultEvery = 60.0

    @Option(help: "Invocations in flight (each lane submits its next once the last has its result).")
    var lanes = 4

    @Option(help: "The worker's VM backend: auto, qemu or process.")
    var backend = "auto"

    @Option(help: "The worker's status port.")
    var statusPort = 9493

    func validate() throws {
        guard minutes > 0, faultEvery >= 10, (1...64).contains(lanes) else { throw ValidationError("--minutes > 0, --fault-every ≥ 10, --lanes 1–64") }
    }

    func run() async throws {
        try bench.requireKiln()
        let folder = ".local/bench-soak/run-\(UUID().uuidString.prefix(6))"
        let runBase = "\(FileManager.default.currentDirectoryPath)/\(folder)/vms"
        try FileManager.default.createDirectory(atPath: runBase, withIntermediateDirectories: true)
        let names = KilnNames(prefix: "ksoak-\(UUID().uuidString.prefix(6).lowercased())")
        let configuration = """
            \(bench.vmSection(backend: backend))
            profiles: {small: {vcpus: 1, memory_mb: 128, min_idle: 1, max_idle: 4, max_total: 4}}
            """
        func startWorker(_ generation: Int) async throws -> BenchWorker {
            try await BenchWorker.start(
                kiln: bench.kiln, url: bench.url, folder: folder, name: "soak-\(generation)", statusPort: statusPort, configuration: configuration,
                names: names, history: "\(folder)/history.sqlite", environment: ["KILN_RUN_DIR": runBase])
        }
        print("kiln-bench soak: \(formatted(minutes, decimals: 1)) minutes, \(lanes) in flight, a fault every \(formatted(faultEvery)) s; \(folder)")
        var worker = try await startWorker(1)
        let ledger = Ledger()
        let client = try await SoakClient(url: bench.url, names: names, ledger: ledger)
        let started = ContinuousClock.now
        let end = started + .milliseconds(Int64(minutes * 60_000))
        let load = Task { try await client.load(lanes: lanes, until: end) }

        var samples: [(minute: Double, rssKB: Int, descriptors: Int, vms: Int)] = []
        var faults: [String] = []
        var nextFault = ContinuousClock.now + .milliseconds(Int64(faultEvery * 1_000))
        var nextSample = ContinuousClock.now
        var turn = 0
        var generation = 1
        while ContinuousClock.now < end {
            let minute = (ContinuousClock.now - started).inSeconds / 60
            if ContinuousClock.now >= nextSample {
                let sample = (minute, Self.residentKB(worker.pid), Self.descriptors(worker.pid), Self.qemuChildren(of: worker.pid).count)
                samples.append(sample)
                progress("minute \(formatted(minute, decimals: 1)): \(ledger.summary), worker RSS \(sample.1 / 1_024) MiB, \(sample.2) descriptors, \(sample.3) QEMUs")
                nextSample = ContinuousClock.now + .seconds(10)
            }
            if ContinuousClock.now >= nextFault {
                let fault: String
                switch turn % 3 {
                case 0:
                    if let vm = Self.qemuChildren(of: worker.pid).randomElement() {
                        kill(vm, SIGKILL)
                        fault = "killed VM process \(vm)"
                    } else {
                        fault = "no VM to kill"
                    }
                case 1:
                    let stopped = try runToCompletion("deploy/local/rabbitmq.sh", ["stop"])
                    let restarted = try runToCompletion("deploy/local/rabbitmq.sh", ["start"])
                    guard restarted.status == 0 else { throw BenchmarkError("the broker did not start again: \(restarted.output)") }
                    fault = "restarted the broker (stop \(stopped.status), start \(restarted.status))"
                default:
                    kill(worker.pid, SIGKILL)
                    var status: Int32 = 0
                    waitpid(worker.pid, &status, 0)
                    generation += 1
                    worker = try await startWorker(generation)
                    fault = "SIGKILLed the worker; worker \(generation) started (pid \(worker.pid))"
                }
                faults.append("minute \(formatted(minute, decimals: 1)): \(fault)")
                progress(faults.last!)
                turn += 1
                nextFault = ContinuousClock.now + .milliseconds(Int64(faultEvery * 1_000))
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        try await load.value
        // The last results come in; then the worker drains and exits.
        let settled = await ledger.waitUntilAnswered(timeout: .seconds(180))
        worker.stop()
        await client.close()
        try? await worker.deleteTopology(alsoDeleting: [client.tapQueue])

        report(ledger: ledger, settled: settled, samples: samples, faults: faults, runBase: runBase, workerPID: worker.pid)
    }

    private func report(
        ledger: Ledger, settled: Bool, samples: [(minute: Double, rssKB: Int, descriptors: Int, vms: Int)], faults: [String], runBase: String,
        workerPID: pid_t
    ) {
        let account = ledger.account()
        print("\nfaults: \(faults.count)")
        for fault in faults { print("  \(fault)") }
        print("\ninvocations: \(account.submitted) submitted, \(account.answered) with a result, \(account.missing.count) without"
            + (settled ? "" : " (still missing after 180 s)"))
        print("second results: \(account.redelivered) redeliveries (attempt > 1), \(account.republished) the same result published again "
            + "(its confirm lost in a broker restart), \(account.resent) of invocations the producer sent again "
            + "(unconfirmed when a connection dropped), \(account.unexplained) unexplained")
        if !account.missing.isEmpty { print("  missing: \(account.missing.prefix(10).joined(separator: ", "))") }
        var table = TextTable("minute", "worker RSS MiB", "descriptors", "QEMU processes")
        for sample in samples where samples.count < 40 || Int(sample.minute * 6) % 6 == 0 {
            table.add(formatted(sample.minute, decimals: 1), "\(sample.rssKB / 1_024)", "\(sample.descriptors)", "\(sample.vms)")
        }
        print("\n" + table.render())
        let leftoverVMs = Self.processes(mentioning: runBase)
        let leftoverFolders = (try? FileManager.default.contentsOfDirectory(atPath: runBase)) ?? []
        let leftoverCgroups = Self.kilnCgroups()
        print("\nleft behind: \(leftoverVMs.count) VM processes, \(leftoverFolders.count) run folders, \(leftoverCgroups.count) cgroups"
            + (leftoverCgroups.isEmpty ? "" : " (\(leftoverCgroups.prefix(5).joined(separator: ", ")))"))
        let clean = account.missing.isEmpty && account.unexplained == 0 && leftoverVMs.isEmpty && leftoverFolders.isEmpty && leftoverCgroups.isEmpty
        print(clean ? "every invocation accounted for, nothing left behind" : "NOT clean")
    }

    // MARK: The host

    /// VmRSS of `pid`, KiB (0 once it is gone).
    static func residentKB(_ pid: pid_t) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
    }

    /// Open descriptors of `pid`.
    static func descriptors(_ pid: pid_t) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    /// The QEMU processes `pid` started.
    static func qemuChildren(of pid: pid_t) -> [pid_t] {
        allProcesses().filter { $0.parent == pid && $0.command.hasPrefix("qemu") }.map(\.pid)
    }

    /// Processes whose command line mentions `text`.
    static func processes(mentioning text: String) -> [pid_t] {
        allProcesses().filter { process in
            guard let line = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(process.pid)/cmdline")) else { return false }
            return String(decoding: line.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(text)
        }.map(\.pid)
    }

    static func allProcesses() -> [(pid: pid_t, parent: pid_t, command: String)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, let parent = pid_t(fields[1]) else { return nil }
            return (pid, parent, String(stat[stat.index(after: open)..<close]))
        }
    }

    /// The VM cgroups below Kiln's group, in every hierarchy.
    static func kilnCgroups() -> [String] {
        let roots = ["/sys/fs/cgroup/kiln"] + ["cpu", "memory", "pids", "unified"].map { "/sys/fs/cgroup/\($0)/kiln" }
        return roots.flatMap { root in
            ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { name in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: "\(root)/\(name)", isDirectory: &isDirectory) && isDirectory.boolValue
            }.map { "\(root)/\($0)" }
        }
    }

    private func progress(_ line: String) {
        FileHandle.standardError.write(Data("  \(line)\n".utf8))
    }
}

/// Every invocation submitted, and every result seen for it.
private final class Ledger: @unchecked Sendable {
    private let lock = NSLock()
    private var submitted: [String: Int] = [:]
    /// Per invocation, each result's attempt, worker and finishing time.
    private var results: [String: [Seen]] = [:]

    struct Seen: Hashable {
        var attempt: UInt32
        var worker: String
        var finishedAtUs: UInt64
    }

    func submitting(_ id: String) {
        lock.withLock { submitted[id, default: 0] += 1 }
    }

    func answered(_ result: InvocationResult) {
        lock.withLock {
            results[result.id, default: []].append(Seen(attempt: result.attempt, worker: result.worker, finishedAtUs: result.finishedAtUs))
        }
    }

    func hasResult(_ id: String) -> Bool {
        lock.withLock { results[id] != nil }
    }

    var summary: String {
        lock.withLock { "\(submitted.count) submitted, \(results.count) answered" }
    }

    /// Waits until every submitted invocation has a result; whether it came to that.
    func waitUntilAnswered(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if lock.withLock({ submitted.keys.allSatisfy { results[$0] != nil } }) { return true }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    struct Account {
        var submitted = 0
        var answered = 0
        var missing: [String] = []
        var redelivered = 0
        var republished = 0
        var resent = 0
        var unexplained = 0
    }

    func account() -> Account {
        lock.withLock {
            var account = Account(submitted: submitted.count)
            for (id, sends) in submitted {
                guard let seen = results[id] else {
                    account.missing.append(id)
                    continue
                }
                account.answered += 1
                // The same result again, byte for byte: published again after a lost confirm.
                let distinct = Set(seen)
                account.republished += seen.count - distinct.count
                let extra = distinct.count - 1
                guard extra > 0 else { continue }
                let redeliveries = distinct.filter { $0.attempt > 1 }.count
                account.redelivered += min(extra, redeliveries)
                let rest = extra - min(extra, redeliveries)
                account.resent += min(rest, sends - 1)
                account.unexplained += rest - min(rest, sends - 1)
            }
            return account
        }
    }
}

/// The soak's producer: invocations published with confirms (sent again after a dropped
/// connection), results read from a durable queue on `kiln.results`, so that none is lost while
/// the broker restarts.
private final class SoakClient: Sendable {
    let names: KilnNames
    let ledger: Ledger
    let publisher: AMQPConnection
    let results: AMQPConnection
    let tapQueue: String
    private let reader: Task<Void, Never>

    init(url: String, names: KilnNames, ledger: Ledger) async throws {
        self.names = names
        self.ledger = ledger
        var configuration = try AMQPConfiguration(url: url)
        let logger = Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() }
        configuration.connectionName = "kiln-bench soak producer"
        publisher = AMQPConnection(configuration: configuration, publishWindow: 256, logger: logger)
        try await publisher.connect()
        configuration.connectionName = "kiln-bench soak results"
        results = AMQPConnection(configuration: configuration, logger: logger)
        try await results.connect()
        tapQueue = "\(names.prefix).soak-results"
        try await results.declare(AMQPTopology(
            queues: [.init(name: tapQueue, durable: true)], bindings: [.init(queue: tapQueue, exchange: names.resultsExchange, routingKey: "#")]))
        let deliveries = try await results.consume(queue: tapQueue, prefetch: 256)
        reader = Task {
            do {
                for try await delivery in deliveries {
                    if let result = try? MessagePackDecoder().decode(InvocationResult.self, from: delivery.body) { ledger.answered(result) }
                    try? delivery.ack()
                }
            } catch {}
        }
    }

    /// `lanes` invocations in flight until `end`: each lane waits for its result (two minutes at
    /// most; one still missing then is counted at the end) before the next.
    func load(lanes: Int, until end: ContinuousClock.Instant) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<lanes {
                group.addTask {
                    var round = 0
                    while ContinuousClock.now < end {
                        round += 1
                        let invocation = Self.invocation(lane: lane, round: round)
                        self.ledger.submitting(invocation.id)
                        try await self.publish(invocation)
                        let deadline = ContinuousClock.now + .seconds(120)
                        while !self.ledger.hasResult(invocation.id), ContinuousClock.now < deadline {
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    private static func invocation(lane: Int, round: Int) -> Invocation {
        let id = "soak-\(lane)-\(round)-\(UUID().uuidString.prefix(6))"
        switch round % 3 {
        case 0: return Invocation(id: id, method: "echo-serve", args: ["round": .uint(UInt64(round))], deadlineMs: 30_000)
        case 1: return Invocation(id: id, method: "echo", args: ["round": .uint(UInt64(round))], deadlineMs: 30_000)
        default: return Invocation(id: id, method: "sleep", args: ["ms": 20], deadlineMs: 30_000)
        }
    }

    /// Publishes until the broker confirms: through a restart, the connection reconnects and
    /// sends again what was unconfirmed (which may then reach the queue twice; the ledger
    /// counts such results apart).
    private func publish(_ invocation: Invocation) async throws {
        let message = AMQPMessage(
            exchange: names.invokeExchange, routingKey: invocation.method, body: try MessagePackEncoder().encode(invocation),
            properties: .msgpack(messageID: invocation.id))
        while true {
            do {
                try await publisher.publish(message)
                return
            } catch AMQPError.closed {
                throw AMQPError.closed
            } catch {
                ledger.submitting(invocation.id)
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    func close() async {
        reader.cancel()
        await results.close(grace: .seconds(1))
        await publisher.close(grace: .seconds(1))
    }
}
