import ArgumentParser
import Foundation
import KilnPool
import KilnTools
import KilnWorker

/// `kiln-bench pool-sizing`: a bursty synthetic trace replayed against three ways of keeping VMs
/// warm, in one run: a fixed-size pool, OpenWhisk's reactive rule (a few pre-warmed stem cells
/// replenished as they are used; used containers kept for a fixed idle timeout), and Kiln's
/// forecast (``ArrivalForecaster``, the hybrid histogram policy). It reports warm hits (an
/// invocation found an idle VM) and idle VM-seconds (the cost of keeping them).
struct PoolSizingBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool-sizing",
        abstract: "Warm hits and idle VM-seconds of pool sizing policies on a bursty synthetic trace.")

    @Option(help: "Hours of trace.")
    var hours = 8.0

    @Option(help: "The trace's random seed.")
    var seed: UInt64 = 11

    @Option(help: "VMs of the fixed-size pools, in all.")
    var fixedSizes = [8, 24]

    @Option(help: "OpenWhisk: pre-warmed stem cells.")
    var stemCells = 2

    @Option(help: "OpenWhisk: seconds a used container stays warm.")
    var keepAlive = 600.0

    @Option(help: "Seconds to provision a VM (a snapshot restore).")
    var provisionSeconds = 0.1

    func run() {
        let trace = BurstyTrace.make(hours: hours, seed: seed)
        print("kiln-bench pool-sizing: \(trace.arrivals.count) invocations over \(hours) h of 3 methods (bursts every 300 s of 10-16, "
            + "every 60 s of 3-6, and a Poisson trickle); provisioning \(provisionSeconds) s")
        var table = TextTable("policy", "warm hits", "cold starts", "idle VM-seconds", "idle VMs on average")
        let policies: [(String, SizingPolicy)] = fixedSizes.map { ("fixed pool of \($0) VMs", FixedPool(size: $0)) } + [
            ("OpenWhisk reactive (\(stemCells) stem cells, \(Int(keepAlive)) s keep-alive)", ReactivePrewarm(stemCells: stemCells, keepAlive: keepAlive)),
            ("Kiln forecast (hybrid histogram)", ForecastPolicy()),
        ]
        for (name, policy) in policies {
            var simulation = Simulation(policy: policy, provisionSeconds: provisionSeconds)
            let result = simulation.replay(trace)
            table.add(name, formatted(result.hitRate * 100, decimals: 2) + "%", formatted(Double(result.coldStarts)),
                      formatted(result.idleVMSeconds), formatted(result.idleVMSeconds / (hours * 3_600), decimals: 2))
        }
        print(table.render())
    }
}

/// Invocations of several methods: periodic bursts with jitter, and a Poisson trickle.
struct BurstyTrace {
    struct Arrival {
        var time: Double
        var method: String
        var service: Double
    }

    var arrivals: [Arrival]

    static func make(hours: Double, seed: UInt64) -> BurstyTrace {
        var random = SeededRandom(seed: seed)
        let end = hours * 3_600
        var arrivals: [Arrival] = []
        func bursts(_ method: String, period: Double, jitter: Double, sizes: ClosedRange<Int>) {
            var time = random.uniform(0, period)
            while time < end {
                let size = Int(random.uniform(Double(sizes.lowerBound), Double(sizes.upperBound) + 1))
                for member in 0..<size {
                    arrivals.append(Arrival(time: time + Double(member) * 0.05, method: method, service: random.uniform(0.3, 2)))
                }
                time += period + random.uniform(-jitter, jitter)
            }
        }
        bursts("report", period: 300, jitter: 30, sizes: 10...16)
        bursts("thumbnail", period: 60, jitter: 10, sizes: 3...6)
        var time = 0.0
        while time < end {
            time += -40 * log(max(random.uniform(0, 1), 1e-9))
            arrivals.append(Arrival(time: time, method: "webhook", service: random.uniform(0.1, 0.5)))
        }
        return BurstyTrace(arrivals: arrivals.sorted { $0.time < $1.time })
    }
}

/// How many VMs a policy wants kept idle, and when it lets one go.
protocol SizingPolicy {
    /// Hears every arrival.
    mutating func arrived(_ method: String, at time: Double)
    /// Idle VMs wanted at `time` (VMs being provisioned count towards it), with `busy` in use.
    func target(at time: Double, idle: [Simulation.IdleVM], busy: Int) -> Int
    /// Whether an idle VM is destroyed at `time`.
    func expires(_ vm: Simulation.IdleVM, at time: Double, idleCount: Int, target: Int) -> Bool
}

/// A pool of `size` VMs in all: idle ones are replaced only when one is destroyed.
struct FixedPool: SizingPolicy {
    let size: Int
    mutating func arrived(_ method: String, at time: Double) {}
    func target(at time: Double, idle: [Simulation.IdleVM], busy: Int) -> Int { max(0, size - busy) }
    func expires(_ vm: Simulation.IdleVM, at time: Double, idleCount: Int, target: Int) -> Bool { idleCount > target }
}

/// OpenWhisk's rule: keep `stemCells` never-used VMs, start another whenever one is taken; a
/// used VM stays warm until it has been idle for `keepAlive`.
struct ReactivePrewarm: SizingPolicy {
    let stemCells: Int
    let keepAlive: Double
    mutating func arrived(_ method: String, at time: Double) {}
    func target(at time: Double, idle: [Simulation.IdleVM], busy: Int) -> Int {
        idle.filter { $0.used }.count + stemCells
    }
    func expires(_ vm: Simulation.IdleVM, at time: Double, idleCount: Int, target: Int) -> Bool {
        vm.used && time - vm.idleSince > keepAlive
    }
}

/// Kiln: the forecast sets the target; surplus VMs go after a short grace.
struct ForecastPolicy: SizingPolicy {
    private var forecaster = ArrivalForecaster()
    private let origin = ContinuousClock.now
    private var methods: Set<String> = []
    let grace = 10.0

    private func instant(_ time: Double) -> ContinuousClock.Instant { origin + .milliseconds(Int64(time * 1_000)) }

    mutating func arrived(_ method: String, at time: Double) {
        forecaster.recordArrival(method, at: instant(time))
        methods.insert(method)
    }

    func target(at time: Double, idle: [Simulation.IdleVM], busy: Int) -> Int {
        forecaster.forecast(methods: methods, at: instant(time)).warmVMs
    }

    func expires(_ vm: Simulation.IdleVM, at time: Double, idleCount: Int, target: Int) -> Bool {
        idleCount > target && time - vm.idleSince > grace
    }
}

/// A pool replayed over a trace in steps of 50 ms.
struct Simulation {
    struct IdleVM {
        var idleSince: Double
        var used: Bool
    }

    struct Result {
        var hitRate: Double
        var coldStarts: Int
        var idleVMSeconds: Double
    }

    var policy: SizingPolicy
    let provisionSeconds: Double
    let step = 0.05

    init(policy: SizingPolicy, provisionSeconds: Double) {
        self.policy = policy
        self.provisionSeconds = provisionSeconds
    }

    mutating func replay(_ trace: BurstyTrace) -> Result {
        var idle: [IdleVM] = []
        var provisioning: [Double] = []
        var busyUntil: [Double] = []
        var hits = 0
        var cold = 0
        var idleSeconds = 0.0
        var next = 0
        let end = (trace.arrivals.last?.time ?? 0) + 60
        var time = 0.0
        while time < end {
            // VMs come in: provisioned ones, and busy ones that finished (they were used).
            provisioning.removeAll { ready in
                if ready <= time { idle.append(IdleVM(idleSince: time, used: false)); return true }
                return false
            }
            busyUntil.removeAll { free in
                if free <= time { idle.append(IdleVM(idleSince: time, used: true)); return true }
                return false
            }
            while next < trace.arrivals.count, trace.arrivals[next].time <= time {
                let arrival = trace.arrivals[next]
                policy.arrived(arrival.method, at: time)
                if let index = idle.indices.max(by: { idle[$0].idleSince < idle[$1].idleSince }) {
                    idle.remove(at: index)
                    hits += 1
                    busyUntil.append(time + arrival.service)
                } else {
                    cold += 1
                    busyUntil.append(time + provisionSeconds + arrival.service)
                }
                next += 1
            }
            let target = policy.target(at: time, idle: idle, busy: busyUntil.count)
            // Oldest first, one at a time: whether the next goes depends on how many are left.
            idle.sort { $0.idleSince < $1.idleSince }
            var index = 0
            while index < idle.count {
                if policy.expires(idle[index], at: time, idleCount: idle.count, target: target) {
                    idle.remove(at: index)
                } else {
                    index += 1
                }
            }
            while idle.count + provisioning.count < target { provisioning.append(time + provisionSeconds) }
            idleSeconds += Double(idle.count) * step
            time += step
        }
        let total = hits + cold
        return Result(hitRate: total == 0 ? 1 : Double(hits) / Double(total), coldStarts: cold, idleVMSeconds: idleSeconds)
    }
}
