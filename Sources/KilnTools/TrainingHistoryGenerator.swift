import Foundation
import KilnPool
import KilnPredict
import KilnVM
import KilnWire
import Logging
import Synchronization

/// Makes a realistic execution history for training and evaluating latency models: the example
/// methods with varied inputs, on real VMs of a driver, in phases of varied host load (quiet,
/// background `burn` jobs in other VMs, host CPU burners, bursts of concurrency), recorded with
/// the same features the worker records.
public struct TrainingHistoryGenerator: Sendable {
    public struct Settings: Sendable {
        public var invocations = 1_200
        /// VMs kept for the invocations (background burns get their own).
        public var vms = 3
        public var profile = VMProfile.small
        public var seed: UInt64 = 7

        public init() {}
    }

    let driver: any MicroVMDriver
    let backend: String
    let entries: [String: [String]]
    let dependencies: [String: MethodDependencies]
    let settings: Settings
    let logger: Logger

    /// - Parameters:
    ///   - driver: Makes the VMs.
    ///   - backend: Its name, as records say it.
    ///   - manifest: The image's manifest (the guest entries of the example methods).
    public init(driver: any MicroVMDriver, backend: String, manifest: MethodManifest, settings: Settings, logger: Logger) {
        self.driver = driver
        self.backend = backend
        self.entries = Dictionary(uniqueKeysWithValues: manifest.methods.keys.compactMap { name in
            manifest.guestEntry(for: name).map { (name, $0) }
        })
        self.dependencies = manifest.methods.mapValues { MethodDependencies(names: $0.dependencies.names, sizeMB: Double($0.dependencies.sizeMB)) }
        self.settings = settings
        self.logger = logger
    }

    /// A VM in use by the generator, with what the worker would know of it.
    private final class Slot: @unchecked Sendable {
        var vm: any MicroVM
        var uses = 0
        var lastMethod: String?
        var loaded: Set<String> = []

        init(vm: any MicroVM) {
            self.vm = vm
        }
    }

    /// Runs the phases and returns the records, oldest first. `progress` hears each phase.
    public func generate(progress: @Sendable (String) -> Void) async throws -> [ExecutionRecord] {
        var random = SeededRandom(seed: settings.seed)
        let reader = ProcReader()
        var previous = reader.counters()
        var sample = reader.sample(now: previous, previous: previous)
        var records: [ExecutionRecord] = []
        var slots: [Slot] = []
        for _ in 0..<settings.vms { slots.append(Slot(vm: try await driver.provision(settings.profile))) }

        let phases: [(name: String, share: Double, background: Int, burners: Int, concurrency: Int)] = [
            ("quiet, one at a time", 0.25, 0, 0, 1),
            ("two background burn jobs in other VMs", 0.2, 2, 0, 1),
            ("host CPU burners", 0.2, 0, 1, 1),
            ("bursts of three at once", 0.2, 0, 0, 3),
            ("burners and bursts", 0.15, 1, 1, 2),
        ]
        // The phases take turns, a few times over, so that every part of the history (the
        // held-out end included) has every kind of load.
        let rounds = 5
        for round in 1...rounds {
            for phase in phases {
                let count = Int(Double(settings.invocations) * phase.share) / rounds
                progress("round \(round)/\(rounds), \(phase.name): \(count) invocations")
                let load = BackgroundLoad()
                let background = try await startBackground(phase.background, load: load)
                let burners = HostBurners(count: phase.burners)
                var done = 0
                while done < count {
                    let now = reader.counters()
                    if (now.at - previous.at) > .milliseconds(250) {
                        sample = reader.sample(now: now, previous: previous)
                        previous = now
                    }
                    let batch = min(phase.concurrency, count - done)
                    let jobs = (0..<batch).map { _ in Self.randomJob(&random) }
                    let inFlight = batch + phase.background
                    let host = sample
                    let finished = try await withThrowingTaskGroup(of: ExecutionRecord?.self) { group in
                        for (index, job) in jobs.enumerated() {
                            let slot = slots[index % slots.count]
                            group.addTask { try await self.run(job, on: slot, host: host, concurrency: inFlight) }
                        }
                        var finished: [ExecutionRecord] = []
                        for try await record in group { if let record { finished.append(record) } }
                        return finished
                    }
                    records.append(contentsOf: finished)
                    done += batch
                    // Now and then a VM is retired and a fresh one takes its place, as the lifecycle does.
                    if random.next() % 40 == 0 {
                        let index = Int(random.next() % UInt64(slots.count))
                        await slots[index].vm.destroy()
                        slots[index] = Slot(vm: try await driver.provision(settings.profile))
                    }
                }
                burners.stop()
                load.stop()
                for vm in background { await vm.destroy() }
            }
        }
        for slot in slots { await slot.vm.destroy() }
        return records.sorted { $0.recordedAtUs < $1.recordedAtUs }
    }

    /// Keeps `count` VMs running `burn` back to back until stopped.
    private func startBackground(_ count: Int, load: BackgroundLoad) async throws -> [any MicroVM] {
        var vms: [any MicroVM] = []
        for index in 0..<count {
            let vm = try await driver.provision(settings.profile)
            vms.append(vm)
            guard let entry = entries["burn"] else { continue }
            Task {
                while load.running {
                    let payload = try MessagePackEncoder().encode(Self.methodInput(["ms": 200]))
                    _ = try? await vm.exec(.init(id: "background-\(index)", method: "burn", entry: entry, payload: payload, deadlineMs: 5_000))
                }
            }
        }
        return vms
    }

    /// What a method program reads on stdin (see the README's exec mode): its arguments, no
    /// context.
    private static func methodInput(_ args: MessagePackValue) -> MessagePackValue {
        ["args": args]
    }

    private struct Job {
        var method: String
        var args: MessagePackValue
    }

    private static func randomJob(_ random: inout SeededRandom) -> Job {
        switch random.next() % 5 {
        case 0: return Job(method: "sleep", args: ["ms": .uint(5 + random.next() % 196)])
        case 1: return Job(method: "burn", args: ["ms": .uint(5 + random.next() % 146)])
        case 2:
            let size = 1 << Int(4 + random.next() % 15)
            return Job(method: "sha256", args: ["data": .binary([UInt8](repeating: UInt8(truncatingIfNeeded: size), count: size))])
        case 3:
            let size = Int(random.next() % 20_000)
            return Job(method: "echo", args: ["text": .string(String(repeating: "k", count: size))])
        default: return Job(method: "fail", args: ["message": "generated failure"])
        }
    }

    private func run(_ job: Job, on slot: Slot, host: HostSample, concurrency: Int) async throws -> ExecutionRecord? {
        guard let entry = entries[job.method] else { return nil }
        let payload = try MessagePackEncoder().encode(Self.methodInput(job.args))
        let deadlineMs: UInt64 = 10_000
        let invocation = InvocationTraits(
            method: job.method, args: job.args, argsBytes: payload.count, deadlineMs: deadlineMs, dependencies: dependencies[job.method] ?? .none)
        let vm = CandidateVM(
            profile: settings.profile.name, vcpus: settings.profile.vcpus, memoryMB: settings.profile.memoryMB, backend: backend,
            past: .init(lastMethod: slot.lastMethod, uses: slot.uses, loadedDependencies: slot.loaded))
        let load = HostLoad(
            cpu: host.cpuUtilization, memoryPressure: host.memoryPressure, cpuPressure: host.cpuPressure,
            networkBps: Double(host.networkReceiveBps) + Double(host.networkTransmitBps), concurrentExecutions: concurrency)
        let features = PlacementFeatures(invocation: invocation, vm: vm, load: load)
        let result = try await slot.vm.exec(.init(id: UUID().uuidString, method: job.method, entry: entry, payload: payload, deadlineMs: deadlineMs))
        slot.uses += 1
        slot.lastMethod = job.method
        slot.loaded.formUnion(invocation.dependencies.names)
        try? await slot.vm.reset()
        let outcome = ExecutionOutcome(features: features, provisionUs: 0, execUs: Double(result.execUs), succeeded: result.status != .timeout)
        return ExecutionRecord(invocationID: "generated-\(UUID().uuidString.prefix(8))", recordedAtUs: UInt64(Date().timeIntervalSince1970 * 1_000_000), outcome: outcome)
    }
}

/// Whether the background jobs should keep going.
private final class BackgroundLoad: Sendable {
    private let flag = Atomic<Bool>(true)
    var running: Bool { flag.load(ordering: .relaxed) }
    func stop() { flag.store(false, ordering: .relaxed) }
}

/// Host threads that keep CPUs busy until stopped: the load of a benchmark's or a training
/// generator's busy phases.
public final class HostBurners: Sendable {
    private let flag = Atomic<Bool>(true)

    /// Starts `count` threads, each spinning on a core.
    public init(count: Int) {
        for _ in 0..<count {
            let thread = Thread { [self] in
                var x: UInt64 = 1
                while flag.load(ordering: .relaxed) { for _ in 0..<10_000 { x = x &* 6364136223846793005 &+ 1 } }
                _ = x
            }
            thread.start()
        }
    }

    /// Lets the threads end.
    public func stop() { flag.store(false, ordering: .relaxed) }
}

/// A small seeded generator (SplitMix64), so that generated histories and traces can be made again.
public struct SeededRandom: Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in [low, high).
    public mutating func uniform(_ low: Double, _ high: Double) -> Double {
        low + (high - low) * Double(next() >> 11) / Double(UInt64(1) << 53)
    }
}
