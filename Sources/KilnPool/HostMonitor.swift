import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// One reading of the host's resources.
public struct HostSample: Sendable, Equatable {
    /// CPU busy fraction over the last interval, 0…1, across all CPUs.
    public var cpuUtilization: Double
    public var cpuCount: Int
    public var memoryTotalMB: Int
    public var memoryAvailableMB: Int
    /// Share of the last 10 s in which some task stalled on memory (PSI `some avg10`), 0…1;
    /// 0 where the kernel has no PSI.
    public var memoryPressure: Double
    /// Bytes per second received and sent on all interfaces but loopback.
    public var networkReceiveBps: UInt64
    public var networkTransmitBps: UInt64
    /// Share of the last interval in which some runnable task waited for a CPU (PSI `cpu some`),
    /// 0…1: how contended the CPUs are, which utilisation stops telling once it reaches 100%.
    /// 0 where the kernel has no PSI.
    public var cpuPressure: Double
    public var takenAt: ContinuousClock.Instant

    public init(
        cpuUtilization: Double, cpuCount: Int, memoryTotalMB: Int, memoryAvailableMB: Int, memoryPressure: Double,
        networkReceiveBps: UInt64, networkTransmitBps: UInt64, cpuPressure: Double = 0, takenAt: ContinuousClock.Instant = .now
    ) {
        self.cpuUtilization = cpuUtilization
        self.cpuCount = cpuCount
        self.memoryTotalMB = memoryTotalMB
        self.memoryAvailableMB = memoryAvailableMB
        self.memoryPressure = memoryPressure
        self.networkReceiveBps = networkReceiveBps
        self.networkTransmitBps = networkTransmitBps
        self.cpuPressure = cpuPressure
        self.takenAt = takenAt
    }

    /// Idle CPU in units of one core.
    public var idleCores: Double { Double(cpuCount) * (1 - cpuUtilization) }
}

/// Reads /proc: CPU time, memory, memory pressure and interface counters. Cumulative counters
/// become rates against the previous reading.
public struct ProcReader: Sendable {
    /// Cumulative counters at one instant.
    public struct Counters: Sendable, Equatable {
        var cpuBusy: UInt64
        var cpuTotal: UInt64
        var receivedBytes: UInt64
        var sentBytes: UInt64
        /// Microseconds some task waited for a CPU (PSI `cpu some total`).
        var cpuStallUs: UInt64
        /// When they were read.
        public var at: ContinuousClock.Instant
    }

    let root: String

    /// Reads the real /proc, or a copy of it under `root` (for tests).
    public init(root: String = "/proc") {
        self.root = root
    }

    private func read(_ file: String) -> String? {
        try? String(contentsOfFile: "\(root)/\(file)", encoding: .utf8)
    }

    /// The cumulative counters now.
    public func counters(at instant: ContinuousClock.Instant = .now) -> Counters {
        var busy: UInt64 = 0
        var total: UInt64 = 0
        if let stat = read("stat"), let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) {
            let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            total = fields.prefix(8).reduce(0, +)
            let idle = (fields.count > 3 ? fields[3] : 0) + (fields.count > 4 ? fields[4] : 0)
            busy = total - min(total, idle)
        }
        var received: UInt64 = 0
        var sent: UInt64 = 0
        if let dev = read("net/dev") {
            for line in dev.split(separator: "\n").dropFirst(2) {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) != "lo" else { continue }
                let fields = parts[1].split(separator: " ").compactMap { UInt64($0) }
                guard fields.count >= 9 else { continue }
                received += fields[0]
                sent += fields[8]
            }
        }
        var stall: UInt64 = 0
        if let psi = read("pressure/cpu"), let some = psi.split(separator: "\n").first(where: { $0.hasPrefix("some") }),
           let field = some.split(separator: " ").first(where: { $0.hasPrefix("total=") }) {
            stall = UInt64(field.dropFirst("total=".count)) ?? 0
        }
        return Counters(cpuBusy: busy, cpuTotal: total, receivedBytes: received, sentBytes: sent, cpuStallUs: stall, at: instant)
    }

    /// A sample from the counters now and those of the previous reading.
    public func sample(now: Counters, previous: Counters) -> HostSample {
        let busy = Double(now.cpuBusy &- previous.cpuBusy)
        let total = Double(now.cpuTotal &- previous.cpuTotal)
        let seconds = max((now.at - previous.at).inSeconds, 0.001)
        var memoryTotal = 0
        var memoryAvailable = 0
        if let meminfo = read("meminfo") {
            for line in meminfo.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count >= 2, let kilobytes = Int(fields[1]) else { continue }
                if fields[0] == "MemTotal:" { memoryTotal = kilobytes / 1_024 }
                if fields[0] == "MemAvailable:" { memoryAvailable = kilobytes / 1_024 }
            }
        }
        var pressure = 0.0
        if let psi = read("pressure/memory"), let some = psi.split(separator: "\n").first(where: { $0.hasPrefix("some") }) {
            for field in some.split(separator: " ") where field.hasPrefix("avg10=") {
                pressure = (Double(field.dropFirst("avg10=".count)) ?? 0) / 100
            }
        }
        let cpus = (read("stat")?.split(separator: "\n").filter { $0.hasPrefix("cpu") && !$0.hasPrefix("cpu ") }.count).map { max($0, 1) }
            ?? ProcessInfo.processInfo.activeProcessorCount
        return HostSample(
            cpuUtilization: total > 0 ? min(max(busy / total, 0), 1) : 0,
            cpuCount: cpus,
            memoryTotalMB: memoryTotal,
            memoryAvailableMB: memoryAvailable,
            memoryPressure: min(max(pressure, 0), 1),
            networkReceiveBps: UInt64(Double(now.receivedBytes &- previous.receivedBytes) / seconds),
            networkTransmitBps: UInt64(Double(now.sentBytes &- previous.sentBytes) / seconds),
            cpuPressure: now.cpuStallUs >= previous.cpuStallUs ? min(Double(now.cpuStallUs - previous.cpuStallUs) / (seconds * 1e6), 1) : 0,
            takenAt: now.at
        )
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    public var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The duration in whole microseconds.
    public var inMicroseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000_000)
    }
}

/// Samples the host every `interval` and keeps the latest reading for the pool sizer and the
/// scheduler. A `Service`: it runs until the service group shuts down.
public final class HostMonitor: Service, Sendable {
    private let reader: ProcReader
    private let interval: Duration
    private let latestSample: Mutex<HostSample?>
    private let onSample: @Sendable (HostSample) -> Void
    private let logger: Logger

    /// Creates a monitor.
    /// - Parameters:
    ///   - reader: Where to read from.
    ///   - interval: Time between samples.
    ///   - logger: For read problems.
    ///   - onSample: Called with every sample, on the monitor's task (keep it short).
    public init(
        reader: ProcReader = ProcReader(), interval: Duration = .seconds(1), logger: Logger,
        onSample: @escaping @Sendable (HostSample) -> Void = { _ in }
    ) {
        self.reader = reader
        self.interval = interval
        self.logger = logger
        self.onSample = onSample
        let first = reader.counters()
        self.latestSample = Mutex(reader.sample(now: first, previous: first))
    }

    /// The latest sample.
    public var latest: HostSample {
        latestSample.withLock { $0! }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var previous = self.reader.counters()
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: self.interval)
                } catch {
                    return
                }
                let now = self.reader.counters()
                let sample = self.reader.sample(now: now, previous: previous)
                previous = now
                self.latestSample.withLock { $0 = sample }
                self.onSample(sample)
            }
        }
    }
}
