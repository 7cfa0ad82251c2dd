import ArgumentParser
import Foundation
import KilnAMQP
import KilnTools
import KilnVM
import KilnWire
import Logging

/// `kiln-bench python`: the example Python methods (`py-echo`, `py-thumbnail` of a 256 KiB PNG)
/// through a real worker, in VMs and in the sandbox, beside Celery running the same functions on
/// the same broker; the cold start of a Python method (a restore with the runtime warm in the
/// snapshot, a restore without it, a fresh boot, a Celery worker's start to its first task); and
/// the memory of an idle Python VM.
struct PythonBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "python",
        abstract: "Python methods: Kiln (VM and sandbox) against Celery, cold starts, memory per idle VM.")

    @OptionGroup var bench: WorkerBenchOptions

    @Option(help: "Sequential round trips per row.")
    var latency = 200

    @Option(help: "Invocations in py-echo's burst (py-thumbnail's is a tenth).")
    var count = 1_000

    @Option(help: "Cold starts of each kind.")
    var cold = 10

    @Option(help: "Idle VMs whose memory is read.")
    var idle = 4

    @Option(help: "Python with Celery and Pillow (`make bench-python` installs them into .local/venv).")
    var python = ".local/venv/bin/python"

    @Option(help: "The worker's status port.")
    var statusPort = 9491

    func validate() throws {
        guard latency >= 20, count >= 100, cold >= 3, idle >= 1 else {
            throw ValidationError("--latency ≥ 20, --count ≥ 100, --cold ≥ 3, --idle ≥ 1")
        }
    }

    /// The 256 KiB picture the thumbnail rows resize (a PNG of stored blocks: 300 × 290 RGB).
    static let picture = PNGImage.make(width: 300, height: 290) { x, y in (UInt8(x % 256), UInt8(y % 256), UInt8((x + y) % 256)) }

    func run() async throws {
        let folder = ".local/bench-python"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let thumbnailArgs: MessagePackValue = ["image": .binary(Self.picture), "size": 64]
        let echoArgs: MessagePackValue = ["text": "hello", "n": 3]
        print("kiln-bench python: \(latency) round trips and a burst of \(count) (thumbnail \(count / 10)) per row; "
            + "a \(Self.picture.count / 1_024) KiB PNG; \(cores) cores, broker at \(bench.url)")

        var rows = TextTable("method", "system", "isolation", "round trip p50 ms", "p99 ms", "throughput /s")
        var ratios: [String: (kiln: Double, celery: Double)] = [:]
        for backend in ["qemu", "process"] {
            let worker = try await BenchWorker.start(
                kiln: bench.kiln, url: bench.url, folder: folder, name: backend, statusPort: statusPort, configuration: """
                    \(bench.vmSection(backend: backend))
                    profiles: {medium: {memory_mb: 256, min_idle: 1, max_idle: 4, max_total: 4}}
                    """)
            do {
                for (method, args, burst) in [("py-echo", echoArgs, count), ("py-thumbnail", thumbnailArgs, count / 10)] {
                    let figures = try await measure(method, args: args, burst: burst, worker: worker)
                    rows.add(method, "Kiln, serve mode, warm", backend == "qemu" ? "VM (qemu)" : "sandbox (no VM)",
                             ms(figures.roundTrips.median), ms(figures.roundTrips.p99), formatted(figures.throughput))
                    if backend == "qemu" { ratios[method, default: (0, 0)].kiln = figures.roundTrips.median }
                }
            } catch {
                worker.stop()
                try? await worker.deleteTopology()
                throw error
            }
            worker.stop()
            try await worker.deleteTopology()
        }
        var celeryStart = Summary([])
        if FileManager.default.isExecutableFile(atPath: python) {
            for (method, task, args, burst) in [("py-echo", "py_echo", echoArgs, count), ("py-thumbnail", "py_thumbnail", thumbnailArgs, count / 10)] {
                let celery = try runCelery(task: task, args: args, burst: burst, folder: folder, cores: cores)
                rows.add(method, "Celery \(celery.version), prefork ×\(cores)", "process", ms(celery.roundTrips.median),
                         ms(celery.roundTrips.p99), formatted(celery.throughput))
                ratios[method, default: (0, 0)].celery = celery.roundTrips.median
            }
            celeryStart = try celeryStarts(folder: folder, cores: cores)
        } else {
            progress("no Python with Celery at \(python): the Celery rows are left out")
        }
        print("\nRound trips are sequential; throughput is a burst submitted at once, first submit to last result.")
        print(rows.render())

        let (starts, memory) = try await coldStartsAndMemory()
        var table = TextTable("cold start of py-echo (to its first result)", "n", "p50 ms", "p99 ms")
        for (label, samples) in starts { table.add(label, "\(samples.count)", ms(samples.median), ms(samples.p99)) }
        if celeryStart.count > 0 { table.add("Celery prefork worker: start to its first task's result", "\(celeryStart.count)", ms(celeryStart.median), ms(celeryStart.p99)) }
        print("\n" + table.render())
        print("\nmemory of an idle Python VM (medium, 256 MiB, restored, py-echo warm): RSS p50 \(formatted(memory.rss.median / 1_024)) MiB, "
            + "max \(formatted(memory.rss.p99 / 1_024)) MiB; PSS p50 \(formatted(memory.pss.median / 1_024)) MiB")

        print("")
        if let echo = ratios["py-echo"], echo.celery > 0 {
            let ratio = echo.kiln / echo.celery
            print("goal: a warm py-echo round trip in a VM within 2× Celery's: \(formatted(ratio, decimals: 2))×, \(ratio <= 2 ? "met" : "NOT met")")
        }
        if let warm = starts.first?.1, let boot = starts.last?.1 {
            let speedup = boot.median / warm.median
            print("goal: a cold start from the warm snapshot ≥ 10× faster than a fresh boot: \(formatted(speedup, decimals: 1))×, \(speedup >= 10 ? "met" : "NOT met")")
            print("goal: that cold start under 300 ms p50: \(ms(warm.median)) ms, \(warm.median <= 300_000 ? "met" : "NOT met")")
        }
        print("goal: an idle Python VM ≤ 96 MiB RSS: \(formatted(memory.rss.median / 1_024)) MiB, \(memory.rss.median <= 96 * 1_024 ? "met" : "NOT met")")
    }

    /// Round trips and a burst of `method` with `args` on the worker's warm pool.
    private func measure(_ method: String, args: MessagePackValue, burst: Int, worker: BenchWorker)
        async throws -> (roundTrips: Summary, throughput: Double)
    {
        let client = try await BenchClient(url: bench.url, names: worker.names, method: method, args: args)
        defer { Task { await client.close() } }
        for _ in 0..<20 { _ = try await client.roundTrip() }
        var samples: [Double] = []
        for _ in 0..<latency { samples.append(try await client.roundTrip().0) }
        let (seconds, _) = try await client.burst(burst)
        progress("\(method): p50 \(ms(Summary(samples).median)) ms, \(formatted(Double(burst) / seconds)) /s")
        return (Summary(samples), Double(burst) / seconds)
    }

    /// Benchmarks/celery_bench.py with the task and its argument (MessagePack in a file).
    private func runCelery(task: String, args: MessagePackValue, burst: Int, folder: String, cores: Int) throws
        -> (version: String, roundTrips: Summary, throughput: Double)
    {
        let argsFile = "\(folder)/\(task).msgpack"
        try Data(try MessagePackEncoder().encode(args)).write(to: URL(fileURLWithPath: argsFile))
        let (status, output) = try runToCompletion(python, [
            "Benchmarks/celery_bench.py", bench.url.replacingOccurrences(of: "/%2f", with: "//"), "--app", "celery_python", "--task", task,
            "--args", argsFile, "--latency", String(latency), "--count", String(burst), "--concurrency", String(cores),
            "--log", "\(folder)/celery-\(task).log",
        ])
        guard status == 0, let line = output.split(separator: "\n").last,
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let latencies = object["latency_us"] as? [Double], let throughput = object["throughput"] as? Double
        else {
            throw BenchmarkError("the Celery side failed (status \(status)); see \(folder)/celery-\(task).log")
        }
        progress("celery \(task): \(formatted(throughput)) /s")
        return (object["celery"] as? String ?? "?", Summary(latencies), throughput)
    }

    /// A Celery worker started `cold` times, each timed to its first task's result.
    private func celeryStarts(folder: String, cores: Int) throws -> Summary {
        var samples: [Double] = []
        for _ in 0..<cold {
            let (status, output) = try runToCompletion(python, [
                "Benchmarks/celery_bench.py", bench.url.replacingOccurrences(of: "/%2f", with: "//"), "--app", "celery_python",
                "--task", "py_echo", "--args", "\(folder)/py_echo.msgpack", "--concurrency", String(cores), "--start-only",
            ])
            guard status == 0, let line = output.split(separator: "\n").last,
                  let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let start = object["start_us"] as? Double else { throw BenchmarkError("a Celery start failed: \(output.suffix(300))") }
            samples.append(start)
        }
        return Summary(samples)
    }

    /// py-echo's first result on a new VM: restored with its runtime warm in the snapshot,
    /// restored and cleared first (Python starts at the call), freshly booted; and the memory of
    /// idle restored VMs that served one call.
    private func coldStartsAndMemory() async throws -> ([(String, Summary)], (rss: Summary, pss: Summary)) {
        let logger = Logger(label: "kiln-bench") { _ in SwiftLogNoOpLogHandler() }
        let image = try GuestImage.open(directory: "\(bench.imageCache)/current")
        guard let entry = image.manifest.guestEntry(for: "py-echo") else { throw BenchmarkError("the image has no py-echo") }
        let request = GuestFrame.ExecRequest(id: "cold", method: "py-echo", entry: entry,
                                             payload: try MessagePackEncoder().encode(["args": ["text": "hi"]] as MessagePackValue), deadlineMs: 60_000)
        let driver = try QEMUDriver(image: image, logger: logger)
        let accelerator = await driver.accelerator().rawValue
        _ = try await driver.template(for: .medium)
        let clock = ContinuousClock()
        func time(_ label: String, clear: Bool = false, _ start: () async throws -> any MicroVM) async throws -> (String, Summary) {
            var samples: [Double] = []
            for _ in 0..<cold {
                try await Task.sleep(for: .milliseconds(200))  // a standby QEMU, as a pool keeps one
                let begin = clock.now
                let vm = try await start()
                if clear { try await vm.reset() }
                let result = try await vm.exec(request)
                samples.append(begin.duration(to: clock.now).microseconds)
                await vm.destroy()
                guard result.status == .ok else { throw BenchmarkError("py-echo failed in a new VM: \(result.stderr)") }
            }
            progress("\(label): p50 \(ms(Summary(samples).median)) ms")
            return (label, Summary(samples))
        }
        var starts: [(String, Summary)] = []
        starts.append(try await time("restore, the runtime warm in the snapshot (qemu/\(accelerator))") { try await driver.restore(.medium) })
        starts.append(try await time("restore, the runtime cleared: Python starts at the call", clear: true) { try await driver.restore(.medium) })
        let sandbox = try ProcessSandboxDriver(image: image, logger: logger)
        starts.append(try await time("sandbox started, its runtime warm (no VM)") { try await sandbox.start(.medium) })
        await sandbox.shutdown()
        starts.append(try await time("fresh boot (qemu/\(accelerator)), the runtime started before the call") { try await driver.boot(.medium) })

        var vms: [any MicroVM] = []
        for _ in 0..<idle {
            let vm = try await driver.restore(.medium)
            _ = try await vm.exec(request)
            vms.append(vm)
        }
        try await Task.sleep(for: .seconds(1))
        var rss: [Double] = [], pss: [Double] = []
        for vm in vms {
            let stats = try await vm.stats()
            rss.append(Double(stats.rssKB))
            pss.append(Double(stats.pssKB))
            await vm.destroy()
        }
        await driver.shutdown()
        return (starts, (Summary(rss), Summary(pss)))
    }

    private func ms(_ microseconds: Double) -> String {
        formatted(microseconds / 1_000, decimals: 2)
    }

    private func progress(_ line: String) {
        FileHandle.standardError.write(Data("  \(line)\n".utf8))
    }
}
