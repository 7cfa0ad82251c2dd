import ArgumentParser
import Foundation
import KilnVM
import KilnWire
import Logging

/// `kiln-bench vm`: provisioning (fresh boot against snapshot restore, to the agent's hello), the
/// exec round trip of `echo` and a channel ping, per-call cost and calls/s in exec mode, serve
/// mode and for the noop builtin, and the memory of idle VMs, for the `qemu` and `process`
/// backends.
struct VMBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm",
        abstract: "Micro-VMs: boot vs restore, exec vs serve vs noop per call, idle RSS/PSS, for qemu and process."
    )

    enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
        case qemu, process, both
    }

    @Option(help: "Which backends to measure.")
    var backend = BackendChoice.both

    @Option(help: "The guest image folder.")
    var image = ".local/images/current"

    @Option(help: "Fresh boots / sandbox starts to time (at least 20).")
    var boots = 20

    @Option(help: "Snapshot restores to time (at least 20).")
    var restores = 20

    @Option(help: "Exec and ping round trips to time.")
    var roundTrips = 200

    @Option(help: "Idle VMs to run at once for the memory figures.")
    var idle = 4

    @Option(help: "Calls per serve-mode and noop row of the per-call table.")
    var calls = 1_000

    @Flag(help: "Only the per-call table (exec, serve, noop): no provisioning, round-trip or memory figures.")
    var callsOnly = false

    @Flag(help: "Only what a memory balloon costs (qemu): standby restores with and without one, and the balloon's release.")
    var balloonOnly = false

    /// `small` with room to grow: 384 MiB of guest RAM, a balloon holding all but 128.
    static let ballooned = VMProfile(name: "small-384", vcpus: 1, memoryMB: 128, memoryCeilingMB: 384)

    func validate() throws {
        guard boots >= 20, restores >= 20 else { throw ValidationError("--boots and --restores must be at least 20") }
        guard roundTrips >= 20, idle >= 1, calls >= 100 else { throw ValidationError("--round-trips ≥ 20, --idle ≥ 1 and --calls ≥ 100") }
    }

    func run() async throws {
        var logger = Logger(label: "kiln-bench")
        logger.logLevel = ProcessInfo.processInfo.environment["KILN_BENCH_LOG"] == "debug" ? .debug : .warning
        let guestImage = try GuestImage.open(directory: image)
        print("kiln-bench vm: image \(guestImage.id.prefix(12)), kernel \(guestImage.metadata.kernelVersion), host \(ProcessInfo.processInfo.activeProcessorCount) cores")
        var provisioning = TextTable("backend", "provision", "n", "min ms", "median ms", "p99 ms")
        var roundTrip = TextTable("backend", "round trip", "n", "min µs", "median µs", "p99 µs")
        var memory = TextTable("backend", "idle VMs", "RSS MiB (median)", "PSS MiB (median)", "RSS MiB (max)")
        var perCall = TextTable("backend", "call", "mode", "n", "host p50 µs", "host p99 µs", "agent p50 µs", "agent p99 µs", "calls/s", "VM CPU µs/call")
        let callBench = CallBenchmark(image: guestImage, calls: calls, execCalls: roundTrips)

        if balloonOnly {
            try await balloonCost(image: guestImage, logger: logger)
            return
        }
        if backend != .process && callsOnly {
            let driver = try QEMUDriver(image: guestImage, logger: logger)
            let vm = try await driver.restore(.small)
            for row in try await callBench.run(on: vm) { perCall.addCalls("qemu/\(await driver.accelerator().rawValue)", row) }
            await vm.destroy()
            await driver.shutdown()
        } else if backend != .process {
            var onDemand = QEMUDriver.Configuration()
            onDemand.standbyPerTemplate = 0
            let driver = try QEMUDriver(image: guestImage, configuration: onDemand, logger: logger)
            let accelerator = await driver.accelerator()
            print("qemu: accelerator \(accelerator.rawValue) (\(await driver.acceleratorReason ?? ""))")
            let clock = ContinuousClock()
            let templateStart = clock.now
            _ = try await driver.template(for: .small)
            print("qemu: snapshot template ready in \(templateStart.duration(to: clock.now).milliseconds) ms (0 if cached)")
            let name = "qemu/\(accelerator.rawValue)"
            provisioning.addSummary(name, "fresh boot", try await timeProvisioning(boots, progress: "boot") { try await driver.boot(.small) })
            provisioning.addSummary(name, "restore, QEMU started on demand",
                                    try await timeProvisioning(restores, progress: "restore") { try await driver.restore(.small) })
            await driver.shutdown()

            var standby = QEMUDriver.Configuration()
            standby.accelerator = accelerator == .kvm ? .kvm : .tcg
            let warm = try QEMUDriver(image: guestImage, configuration: standby, logger: logger)
            await warm.destroyAfterWarmUp()
            provisioning.addSummary(name, "restore into a standby QEMU",
                                    try await timeProvisioning(restores, progress: "standby restore", settle: .milliseconds(100)) {
                                        try await warm.restore(.small)
                                    })
            provisioning.addSummary(name, "restore into a standby QEMU, balloon 128 of 384 MiB",
                                    try await timeProvisioning(restores, progress: "ballooned restore", settle: .milliseconds(100)) {
                                        try await warm.restore(Self.ballooned)
                                    })
            roundTrip.addSummary(name, "balloon 128 → 384 MiB (QMP balloon)", try await timeBalloonRelease(restores, driver: warm))
            let vm = try await warm.restore(.small)
            let trips = try await timeRoundTrips(on: vm, image: guestImage)
            roundTrip.addSummary(name, "exec echo (host round trip)", trips.exec)
            roundTrip.addSummary(name, "exec echo (agent's exec_us)", trips.guestExec)
            roundTrip.addSummary(name, "exec busybox true (host)", trips.execTrue)
            roundTrip.addSummary(name, "ping", trips.ping)
            for row in try await callBench.run(on: vm) { perCall.addCalls(name, row) }
            await vm.destroy()
            memory.addMemory(name + " (restored)", try await idleMemory { try await warm.restore(.small) })
            await warm.shutdown()
        }
        if backend != .qemu && callsOnly {
            let driver = try ProcessSandboxDriver(image: guestImage, logger: logger)
            let vm = try await driver.start(.small)
            for row in try await callBench.run(on: vm) { perCall.addCalls("process", row) }
            await vm.destroy()
            await driver.shutdown()
        } else if backend != .qemu {
            let driver = try ProcessSandboxDriver(image: guestImage, logger: logger)
            provisioning.addSummary("process", "sandbox start", try await timeProvisioning(boots, progress: "start") { try await driver.start(.small) })
            let vm = try await driver.start(.small)
            let trips = try await timeRoundTrips(on: vm, image: guestImage)
            roundTrip.addSummary("process", "exec echo (host round trip)", trips.exec)
            roundTrip.addSummary("process", "exec echo (agent's exec_us)", trips.guestExec)
            roundTrip.addSummary("process", "exec busybox true (host)", trips.execTrue)
            roundTrip.addSummary("process", "ping", trips.ping)
            for row in try await callBench.run(on: vm) { perCall.addCalls("process", row) }
            await vm.destroy()
            memory.addMemory("process", try await idleMemory { try await driver.start(.small) })
            await driver.shutdown()
        }
        if !callsOnly {
            print("\nProvisioning to the agent's hello (sequential; each VM destroyed before the next):")
            print(provisioning.render())
            print("\nRound trips from the host, after 20 warm-up rounds (exec echo spawns the method program in the guest):")
            print(roundTrip.render())
        }
        print("\nPer call on one VM, one after another, after 20 warm-up calls: host round trip, the agent's own exec_us,")
        print("calls/s. exec starts the program per call; serve keeps it up; kiln:noop starts nothing (the platform's")
        print("own overhead, not a method: never compare it with other systems):")
        print(perCall.render())
        if !callsOnly {
            print("\nMemory per idle VM, \(idle) running at once, from /proc/PID/smaps_rollup of the VM's process:")
            print(memory.render())
        }
    }

    /// Standby restores with and without a balloon, interleaved (the same load for both), and
    /// what letting the balloon go takes.
    private func balloonCost(image: GuestImage, logger: Logger) async throws {
        let driver = try QEMUDriver(image: image, logger: logger)
        let name = "qemu/\(await driver.accelerator().rawValue)"
        _ = try await driver.template(for: .small)
        _ = try await driver.template(for: Self.ballooned)
        await driver.destroyAfterWarmUp()
        var plain: [Double] = []
        var ballooned: [Double] = []
        for _ in 0..<restores {
            plain += try await timeProvisioning(1, progress: "restore", settle: .milliseconds(100)) { try await driver.restore(.small) }
            ballooned += try await timeProvisioning(1, progress: "ballooned restore", settle: .milliseconds(100)) {
                try await driver.restore(Self.ballooned)
            }
        }
        var provisioning = TextTable("backend", "provision", "n", "min ms", "median ms", "p99 ms")
        provisioning.addSummary(name, "restore into a standby QEMU, 128 MiB", plain)
        provisioning.addSummary(name, "restore into a standby QEMU, balloon 128 of 384 MiB", ballooned)
        var balloon = TextTable("backend", "round trip", "n", "min µs", "median µs", "p99 µs")
        balloon.addSummary(name, "balloon 128 → 384 MiB (QMP balloon)", try await timeBalloonRelease(restores, driver: driver))
        await driver.shutdown()
        print("\nRestores, one after another, alternating (each VM destroyed before the next):")
        print(provisioning.render())
        print(String(format: "median with a balloon / without: %.2fx", Summary(ballooned).median / Summary(plain).median))
        print("\nLetting the balloon go on a fresh restore, until the guest has the memory (query-balloon):")
        print(balloon.render())
    }

    /// Times `count` releases of a restored VM's balloon (128 → 384 MiB), in microseconds.
    private func timeBalloonRelease(_ count: Int, driver: QEMUDriver) async throws -> [Double] {
        var samples: [Double] = []
        for _ in 0..<count {
            let vm = try await driver.restore(Self.ballooned)
            let started = ContinuousClock.now
            do {
                try await vm.resize(ResourceLimits(cpus: 1, memoryMB: 384 + QEMUDriver.qemuOverheadMB))
            } catch {
                await vm.destroy()
                throw error
            }
            samples.append(started.duration(to: .now).microseconds)
            await vm.destroy()
        }
        return samples
    }

    /// Times `count` provisions (each destroyed at once), in microseconds.
    private func timeProvisioning(
        _ count: Int, progress: String, settle: Duration = .zero, _ make: () async throws -> any MicroVM
    ) async throws -> [Double] {
        var samples: [Double] = []
        for index in 0..<count {
            // Give background work (a standby QEMU starting) time to finish, as a pool would.
            if settle > .zero { try await Task.sleep(for: settle) }
            let vm = try await make()
            samples.append(vm.provisioning.duration.microseconds)
            await vm.destroy()
            if (index + 1) % 10 == 0 { FileHandle.standardError.write(Data("  \(progress) \(index + 1)/\(count)\n".utf8)) }
        }
        return samples
    }

    /// Times exec of echo (host round trip and the agent's own exec_us), exec of busybox `true`
    /// (the cost of starting any program), and ping, on one VM, in microseconds.
    private func timeRoundTrips(on vm: any MicroVM, image: GuestImage) async throws
        -> (exec: [Double], guestExec: [Double], execTrue: [Double], ping: [Double])
    {
        guard let entry = image.manifest.guestEntry(for: "echo") else { throw ValidationError("the image has no echo method") }
        let payload = try MessagePackEncoder().encode(["args": ["text": "ping"]] as MessagePackValue)
        let clock = ContinuousClock()
        var exec: [Double] = []
        var guestExec: [Double] = []
        var execTrue: [Double] = []
        var ping: [Double] = []
        for round in 0..<(roundTrips + 20) {
            let request = GuestFrame.ExecRequest(id: "bench-\(round)", method: "echo", entry: entry, payload: payload, deadlineMs: 5_000)
            let start = clock.now
            let result = try await vm.exec(request)
            let elapsed = start.duration(to: clock.now)
            guard result.status == .ok else { throw ValidationError("echo failed: \(result.stderr)") }
            if round >= 20 {
                exec.append(elapsed.microseconds)
                guestExec.append(Double(result.execUs))
            }
        }
        for round in 0..<(roundTrips + 20) {
            let request = GuestFrame.ExecRequest(id: "true-\(round)", method: "true", entry: ["/bin/true"], payload: [], deadlineMs: 5_000)
            let start = clock.now
            _ = try await vm.exec(request)
            if round >= 20 { execTrue.append(start.duration(to: clock.now).microseconds) }
        }
        for round in 0..<(roundTrips + 20) {
            let start = clock.now
            _ = try await vm.ping()
            if round >= 20 { ping.append(start.duration(to: clock.now).microseconds) }
        }
        return (exec, guestExec, execTrue, ping)
    }

    /// RSS and PSS (KiB) of `idle` VMs running at once, after a second of rest.
    private func idleMemory(_ make: () async throws -> any MicroVM) async throws -> [(rss: Double, pss: Double)] {
        var vms: [any MicroVM] = []
        for _ in 0..<idle { vms.append(try await make()) }
        try await Task.sleep(for: .seconds(1))
        var figures: [(Double, Double)] = []
        for vm in vms {
            let stats = try await vm.stats()
            figures.append((Double(stats.rssKB), Double(stats.pssKB)))
        }
        for vm in vms { await vm.destroy() }
        return figures
    }
}

/// Order statistics of a sample.
struct Summary {
    let count: Int
    let min: Double
    let median: Double
    let p99: Double

    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        min = sorted.first ?? 0
        median = sorted.isEmpty ? 0 : (sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2)
        p99 = sorted.isEmpty ? 0 : sorted[Swift.max(0, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
    }
}

extension QEMUDriver {
    /// Restores and destroys one VM, which starts the standby QEMU.
    func destroyAfterWarmUp() async {
        if let vm = try? await restore(.small) { await vm.destroy() }
    }
}

extension TextTable {
    /// A row of min/median/p99; milliseconds when `samples` are µs of provisioning.
    mutating func addSummary(_ backend: String, _ what: String, _ samples: [Double]) {
        let summary = Summary(samples)
        let scale = headers.contains("min ms") ? 1_000.0 : 1.0
        let decimals = scale > 1 ? 1 : 0
        add(backend, what, "\(summary.count)", formatted(summary.min / scale, decimals: decimals),
            formatted(summary.median / scale, decimals: decimals), formatted(summary.p99 / scale, decimals: decimals))
    }

    mutating func addMemory(_ backend: String, _ figures: [(rss: Double, pss: Double)]) {
        let rss = Summary(figures.map(\.rss))
        let pss = Summary(figures.map(\.pss))
        add(backend, "\(figures.count)", formatted(rss.median / 1024, decimals: 1), formatted(pss.median / 1024, decimals: 1),
            formatted((figures.map(\.rss).max() ?? 0) / 1024, decimals: 1))
    }
}
