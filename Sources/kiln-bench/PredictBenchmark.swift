import ArgumentParser
import Foundation
import KilnAMQP
import KilnPredict
import KilnTools
import KilnVM
import KilnWire
import KilnWorker
import Logging

/// `kiln-bench predict`: the latency model judged live. A mixed workload runs through a real
/// worker on the real broker — serve and exec methods, arguments that vary the work a hundredfold,
/// one to eight invocations at once, phases with a host CPU burner and with other VMs busy,
/// cold and warm starts — and every invocation's prediction, as it was when the worker placed
/// it, is scored against what it then took; the moving-average baseline's prediction for the
/// same placement at the same moment is scored beside it (the worker's history keeps both).
struct PredictBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "The latency model scored live against EWMA, through a real worker under a mixed workload."
    )

    @OptionGroup var bench: WorkerBenchOptions

    @Option(help: "The worker's VM backend: auto, qemu or process.")
    var backend = "auto"

    @Option(help: "Scored invocations in all.")
    var invocations = 2_400

    @Option(help: "Times the phases take turns.")
    var rounds = 4

    @Option(help: "The random seed of the workload.")
    var seed: UInt64 = 11

    @Option(help: "Outcomes of a method after which its predictions count as the steady state.")
    var warmup = 50

    @Option(help: "Where to write the calibration plot (SVG).")
    var plot = ".local/bench-predict/calibration.svg"

    @Option(help: "The worker's status port.")
    var statusPort = 9491

    func validate() throws {
        guard invocations >= 100, rounds >= 1, warmup >= 0 else { throw ValidationError("--invocations ≥ 100, --rounds ≥ 1, --warmup ≥ 0") }
    }

    /// One part of the workload: how many at once, and what else loads the host.
    struct Phase {
        var name: String
        var concurrency: Int
        var burners: Int
        var backgroundVMs: Int
    }

    static let phases = [
        Phase(name: "one at a time", concurrency: 1, burners: 0, backgroundVMs: 0),
        Phase(name: "four at once", concurrency: 4, burners: 0, backgroundVMs: 0),
        Phase(name: "eight at once", concurrency: 8, burners: 0, backgroundVMs: 0),
        Phase(name: "two at once beside a host CPU burner", concurrency: 2, burners: 1, backgroundVMs: 0),
        Phase(name: "two at once, two other VMs busy", concurrency: 2, burners: 0, backgroundVMs: 2),
    ]

    func run() async throws {
        try bench.requireKiln()
        let folder = (plot as NSString).deletingLastPathComponent.isEmpty ? "." : (plot as NSString).deletingLastPathComponent
        let work = ".local/bench-predict/run-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        print("kiln-bench predict: \(invocations) invocations in \(rounds) rounds of \(Self.phases.count) phases, seed \(seed); broker at \(bench.url)")
        // A small idle pool whose VMs age out quickly, and a fresh-VM method: cold starts and
        // fresh VMs happen as the load moves, as on a real host.
        let worker = try await BenchWorker.start(
            kiln: bench.kiln, url: bench.url, folder: work, name: "predict", statusPort: statusPort, configuration: """
                \(bench.vmSection(backend: backend))
                profiles: {small: {vcpus: 1, memory_mb: 128, min_idle: 1, max_idle: 3, max_total: 8}}
                lifecycle: {idle_ttl_s: 2}
                """)
        var scored: [String: Job] = [:]
        do {
            let client = try await LoadClient(url: bench.url, names: worker.names)
            var random = SeededRandom(seed: seed)
            let perPhase = max(1, invocations / (rounds * Self.phases.count))
            for round in 1...rounds {
                for phase in Self.phases {
                    progress("round \(round)/\(rounds), \(phase.name): \(perPhase) invocations")
                    let jobs = (0..<perPhase).map { _ in Job.random(&random) }
                    let burners = HostBurners(count: phase.burners)
                    let background = Task { try await client.keepBusy(lanes: phase.backgroundVMs) }
                    defer {
                        burners.stop()
                        background.cancel()
                    }
                    try await client.run(jobs, concurrency: phase.concurrency)
                    for job in jobs { scored[job.invocation.id] = job }
                }
            }
            await client.close()
        } catch {
            worker.stop()
            try? await worker.deleteTopology()
            throw error
        }
        // SIGTERM: the worker drains and writes what is left of its history.
        worker.stop()
        try await worker.deleteTopology()

        let records = try ExecutionHistory(path: worker.historyPath).all().filter { scored[$0.invocationID] != nil && $0.succeeded }
        try report(records, scored: scored)
        print("worker log and history: \(work)")
    }

    // MARK: Scoring

    private func report(_ records: [ExecutionRecord], scored: [String: Job]) throws {
        var seen: [String: Int] = [:]
        var model: [PredictionEvaluation.Point] = []
        var baseline: [PredictionEvaluation.Point] = []
        var steadyModel: [PredictionEvaluation.Point] = []
        var steadyBaseline: [PredictionEvaluation.Point] = []
        for record in records {
            guard let predicted = record.predictedUs, let base = record.baselineUs else { continue }
            let actual = record.execUs + record.provisionUs
            let label = scored[record.invocationID]?.label ?? record.method
            let point = PredictionEvaluation.Point(predicted: predicted, actual: actual, method: label)
            let basePoint = PredictionEvaluation.Point(predicted: base, actual: actual, method: label)
            model.append(point)
            baseline.append(basePoint)
            seen[record.method, default: 0] += 1
            if seen[record.method]! > warmup {
                steadyModel.append(point)
                steadyBaseline.append(basePoint)
            }
        }
        guard !steadyModel.isEmpty else { throw BenchmarkError("no invocation past the first \(warmup) of its method: raise --invocations") }
        let all = (PredictionEvaluation.Report(predictor: "ridge", points: model), PredictionEvaluation.Report(predictor: "ewma", points: baseline))
        let steady = (PredictionEvaluation.Report(predictor: "ridge", points: steadyModel), PredictionEvaluation.Report(predictor: "ewma", points: steadyBaseline))

        print("\nEach invocation's prediction as the worker made it when placing it, against what it took (exec, plus provisioning on a cold start).")
        print("After each method's first \(warmup) outcomes (the steady state):")
        var table = TextTable("method", "n", "model", "MAPE %", "median APE %", "within 2×", "worst ratio", "EWMA MAPE %", "EWMA median %", "EWMA within 2×", "EWMA worst")
        for method in steady.0.byMethod.keys.sorted() {
            let (ours, theirs) = (steady.0.byMethod[method]!, steady.1.byMethod[method]!)
            table.add(method, "\(ours.count)", "ridge", pct(ours.mape), pct(ours.medianAPE), share(ours.withinTwice), ratio(ours.worstRatio),
                      pct(theirs.mape), pct(theirs.medianAPE), share(theirs.withinTwice), ratio(theirs.worstRatio))
        }
        for (name, reports) in [("all, steady state", steady), ("all, from the first invocation", all)] {
            let (ours, theirs) = (reports.0.overall, reports.1.overall)
            table.add(name, "\(ours.count)", "ridge", pct(ours.mape), pct(ours.medianAPE), share(ours.withinTwice), ratio(ours.worstRatio),
                      pct(theirs.mape), pct(theirs.medianAPE), share(theirs.withinTwice), ratio(theirs.worstRatio))
        }
        print(table.render())

        let long = PredictionEvaluation.Errors(steadyModel.filter { $0.actual >= 20_000 })
        let longBaseline = PredictionEvaluation.Errors(steadyBaseline.filter { $0.actual >= 20_000 })
        let overshoot = steadyModel.map { $0.predicted / max($0.actual, 1) }.max() ?? 0
        let reduction = (1 - steady.0.overall.mape / max(steady.1.overall.mape, 1e-9)) * 100
        print("\ngoals (steady state):")
        goal("median APE ≤ 15%", "\(pct(steady.0.overall.medianAPE))%", steady.0.overall.medianAPE <= 15)
        goal("MAPE ≤ 25%", "\(pct(steady.0.overall.mape))%", steady.0.overall.mape <= 25)
        goal("MAPE ≤ 10% where exec ≥ 20 ms", "\(pct(long.mape))% over \(long.count) (EWMA \(pct(longBaseline.mape))%)", long.mape <= 10)
        goal("≥ 30% lower MAPE than EWMA", "\(formatted(reduction, decimals: 1))% lower", reduction >= 30)
        goal("no prediction past 10× the measured time", "at most \(ratio(overshoot))", overshoot <= 10)

        try CalibrationPlot.svg([steady.0, steady.1], title: "Predicted at placement against measured, \(steady.0.overall.count) invocations (steady state)")
            .write(toFile: plot, atomically: true, encoding: .utf8)
        print("\ncalibration plot: \(plot)")
    }

    private func goal(_ name: String, _ figure: String, _ met: Bool) {
        print("  \(name): \(figure), \(met ? "met" : "NOT met")")
    }

    private func pct(_ value: Double) -> String { formatted(value, decimals: 1) }
    private func share(_ value: Double) -> String { formatted(value * 100, decimals: 0) + "%" }
    private func ratio(_ value: Double) -> String { formatted(value, decimals: 1) + "×" }

    private func progress(_ line: String) {
        FileHandle.standardError.write(Data("  \(line)\n".utf8))
    }
}

/// One scored invocation and the row it is reported under (the method, and its mode).
struct Job: Sendable {
    var invocation: Invocation
    var label: String

    /// A method with arguments drawn so that its work varies about a hundredfold.
    static func random(_ random: inout SeededRandom) -> Job {
        func logUniform(_ low: Double, _ high: Double) -> Int { Int(exp(random.uniform(log(low), log(high)))) }
        let id = "p-\(UUID().uuidString.prefix(13).lowercased())"
        let (method, label, args): (String, String, MessagePackValue)
        switch random.next() % 6 {
        case 0: (method, label, args) = ("echo-serve", "echo-serve (serve)", ["text": .string(String(repeating: "k", count: logUniform(100, 10_000)))])
        case 1:
            let words = logUniform(20, 2_000)
            (method, label, args) = ("wordcount", "wordcount (serve)", ["text": .string(Array(repeating: "word", count: words).joined(separator: " "))])
        case 2: (method, label, args) = ("sleep", "sleep (exec)", ["ms": .uint(UInt64(logUniform(2, 200)))])
        case 3: (method, label, args) = ("burn", "burn (exec, fresh VM)", ["ms": .uint(UInt64(logUniform(2, 200)))])
        case 4: (method, label, args) = ("sha256", "sha256 (exec)", ["data": .binary([UInt8](repeating: 7, count: logUniform(4_096, 409_600)))])
        default: (method, label, args) = ("echo", "echo (exec)", ["text": .string(String(repeating: "k", count: logUniform(100, 10_000)))])
        }
        return Job(invocation: Invocation(id: id, method: method, args: args, deadlineMs: 10_000), label: label)
    }
}

/// A producer that keeps invocations in flight and hands each result to the lane waiting for it.
private final class LoadClient: Sendable {
    let names: KilnNames
    let publisher: AMQPConnection
    let replies: AMQPConnection
    let replyQueue: String
    let mailbox = ResultMailbox()
    private let reader: Task<Void, Never>

    init(url: String, names: KilnNames) async throws {
        self.names = names
        var configuration = try AMQPConfiguration(url: url)
        let logger = Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() }
        configuration.connectionName = "kiln-bench predict producer"
        publisher = AMQPConnection(configuration: configuration, publishWindow: 256, logger: logger)
        try await publisher.connect()
        try await publisher.declare(.kiln(names))
        configuration.connectionName = "kiln-bench predict replies"
        replies = AMQPConnection(configuration: configuration, logger: logger)
        try await replies.connect()
        replyQueue = "\(names.prefix).predict-replies"
        try await replies.declare(AMQPTopology(queues: [.init(name: replyQueue, durable: false, exclusive: true, autoDelete: true)]))
        let consumer = try await replies.consume(queue: replyQueue, prefetch: 256)
        let mailbox = self.mailbox
        reader = Task {
            do {
                for try await delivery in consumer {
                    try delivery.ack()
                    await mailbox.deliver(try MessagePackDecoder().decode(InvocationResult.self, from: delivery.body))
                }
            } catch {
                await mailbox.fail(error)
            }
        }
    }

    /// Submits `invocation` and waits for its result (two minutes at most).
    func call(_ invocation: Invocation) async throws -> InvocationResult {
        try await publisher.publish(AMQPMessage(
            exchange: names.invokeExchange, routingKey: invocation.method, body: try MessagePackEncoder().encode(invocation),
            properties: .msgpack(messageID: invocation.id, correlationID: invocation.id, replyTo: replyQueue)))
        return try await mailbox.result(for: invocation.id, timeout: .seconds(120))
    }

    /// Runs `jobs` with `concurrency` in flight: each lane submits its next job once its last one has come back.
    func run(_ jobs: [Job], concurrency: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<max(1, concurrency) {
                group.addTask {
                    for index in stride(from: lane, to: jobs.count, by: max(1, concurrency)) {
                        let result = try await self.call(jobs[index].invocation)
                        guard result.status == .ok else {
                            throw BenchmarkError("\(jobs[index].invocation.method) came back \(result.status.rawValue): \(result.error?.message ?? "")")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Keeps `lanes` VMs busy with `burn` invocations (not scored) until cancelled.
    func keepBusy(lanes: Int) async throws {
        guard lanes > 0 else { return }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<lanes {
                group.addTask {
                    var round = 0
                    while !Task.isCancelled {
                        round += 1
                        _ = try await self.call(Invocation(id: "background-\(lane)-\(round)-\(UUID().uuidString.prefix(6))", method: "burn", args: ["ms": 300]))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    func close() async {
        reader.cancel()
        await replies.close(grace: .zero)
        await publisher.close(grace: .seconds(1))
    }
}

/// Results by invocation id, for whoever waits for them.
private actor ResultMailbox {
    private var waiting: [String: CheckedContinuation<InvocationResult, any Error>] = [:]
    private var early: [String: InvocationResult] = [:]
    private var failure: (any Error)?

    func result(for id: String, timeout: Duration) async throws -> InvocationResult {
        if let result = early.removeValue(forKey: id) { return result }
        if let failure { throw failure }
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.expire(id, after: timeout)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { waiting[id] = $0 }
    }

    func deliver(_ result: InvocationResult) {
        if let continuation = waiting.removeValue(forKey: result.id) {
            continuation.resume(returning: result)
        } else if !result.id.hasPrefix("background-") {
            early[result.id] = result
        }
    }

    func fail(_ error: any Error) {
        failure = error
        for continuation in waiting.values { continuation.resume(throwing: error) }
        waiting.removeAll()
    }

    private func expire(_ id: String, after timeout: Duration) {
        waiting.removeValue(forKey: id)?.resume(throwing: BenchmarkError("no result for \(id) within \(timeout.text)"))
    }
}
