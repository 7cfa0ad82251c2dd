import ArgumentParser
import Foundation
import KilnPredict

/// `kiln usage [--since 24h] [--method M]`: what each method consumed, from the worker's
/// history, the way a pay-per-use bill counts it.
struct UsageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage", abstract: "Print CPU-seconds and GB-seconds per method, from the execution history.")

    @OptionGroup var settings: ConfigurationOptions

    @Option(help: "The history database; history.path of the configuration by default.")
    var database: String?

    @Option(help: "Only runs since then: an age up to 10 years (90s, 30m, 24h, 7d) or a UTC date (2026-12-01, 2026-12-01T08:00:00Z). All by default.")
    var since: UsageSince?

    @Option(help: "Only this method.")
    var method: String?

    @Flag(help: "Print each method as one JSON line.")
    var json = false

    func run() throws {
        let path = try settings.historyPath(database, mustExist: true)
        let sinceUs = since?.unixMicroseconds(now: Date()) ?? 0
        let usage = try ExecutionHistory(path: path).usage(sinceUs: sinceUs, method: method)
        if json {
            for entry in usage { print(UsageFormatter.jsonLine(entry)) }
            return
        }
        print("usage from \(path)" + (since.map { " since \($0.description)" } ?? ""))
        guard !usage.isEmpty else {
            print("no runs" + (method.map { " of \($0.prefix(128))" } ?? ""))
            return
        }
        print(UsageFormatter.header)
        for entry in usage { print(UsageFormatter.row(entry)) }
        if usage.count > 1 { print(UsageFormatter.row(UsageFormatter.total(usage))) }
    }
}

/// Where `--since` starts: an age before now, or a moment.
struct UsageSince: ExpressibleByArgument, CustomStringConvertible {
    private enum Start {
        case age(seconds: Double)
        case moment(Date)
    }

    private let start: Start
    let description: String

    init?(argument: String) {
        description = argument
        let units: [(suffix: String, seconds: Double)] = [("s", 1), ("m", 60), ("h", 3_600), ("d", 86_400)]
        if let unit = units.first(where: { argument.hasSuffix($0.suffix) }),
           let number = Double(argument.dropLast(unit.suffix.count)), number.isFinite, number >= 0,
           number * unit.seconds <= 3_660 * 86_400 {
            start = .age(seconds: number * unit.seconds)
            return
        }
        let formatter = ISO8601DateFormatter()
        if let moment = formatter.date(from: argument) {
            start = .moment(moment)
            return
        }
        formatter.formatOptions = [.withFullDate]
        guard let day = formatter.date(from: argument) else { return nil }
        start = .moment(day)
    }

    /// The start as Unix µs (0 for a moment before 1970).
    func unixMicroseconds(now: Date) -> UInt64 {
        let moment: Date
        switch start {
        case .age(let seconds): moment = now.addingTimeInterval(-seconds)
        case .moment(let date): moment = date
        }
        return UInt64(max(0, (moment.timeIntervalSince1970 * 1e6).rounded()))
    }
}

/// How usage looks on a terminal.
enum UsageFormatter {
    static let header = pad("method", 24) + " " + lpad("runs", 8) + " " + lpad("exec s", 10) + " " + lpad("GB-s", 10) + " "
        + lpad("guest CPU s", 12) + " " + lpad("host CPU s", 11) + " " + lpad("peak MB", 8) + " " + lpad("in", 9) + " " + lpad("out", 9)

    static func row(_ usage: MethodUsage) -> String {
        pad(String(usage.method.prefix(24)), 24) + " " + lpad("\(usage.invocations)", 8) + " " + lpad(seconds(usage.execSeconds), 10) + " "
            + lpad(seconds(usage.gbSeconds), 10) + " " + lpad(usage.cpuSeconds.map(seconds) ?? "-", 12) + " "
            + lpad(usage.hostCPUSeconds.map(seconds) ?? "-", 11) + " "
            + lpad(usage.peakMemoryKB.map { String(format: "%.1f", Double($0) / 1_024) } ?? "-", 8) + " "
            + lpad(usage.bytesIn.map(bytes) ?? "-", 9) + " " + lpad(usage.bytesOut.map(bytes) ?? "-", 9)
    }

    /// Every method's usage summed, under the name `total`.
    static func total(_ usage: [MethodUsage]) -> MethodUsage {
        func sum<Number: AdditiveArithmetic>(_ values: [Number?]) -> Number? {
            let present = values.compactMap { $0 }
            return present.isEmpty ? nil : present.reduce(.zero, +)
        }
        return MethodUsage(
            method: "total", invocations: usage.map(\.invocations).reduce(0, +), execSeconds: usage.map(\.execSeconds).reduce(0, +),
            gbSeconds: usage.map(\.gbSeconds).reduce(0, +), cpuSeconds: sum(usage.map(\.cpuSeconds)),
            hostCPUSeconds: sum(usage.map(\.hostCPUSeconds)), measuredInvocations: usage.map(\.measuredInvocations).reduce(0, +),
            peakMemoryKB: usage.compactMap(\.peakMemoryKB).max(), bytesIn: sum(usage.map(\.bytesIn)), bytesOut: sum(usage.map(\.bytesOut)))
    }

    static func jsonLine(_ usage: MethodUsage) -> String {
        let object: [String: Any] = [
            "method": usage.method, "invocations": usage.invocations, "exec_seconds": usage.execSeconds, "gb_seconds": usage.gbSeconds,
            "cpu_seconds": usage.cpuSeconds ?? NSNull(), "host_cpu_seconds": usage.hostCPUSeconds ?? NSNull(),
            "measured_invocations": usage.measuredInvocations, "peak_memory_kb": usage.peakMemoryKB ?? NSNull(),
            "bytes_in": usage.bytesIn ?? NSNull(), "bytes_out": usage.bytesOut ?? NSNull(),
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    private static func seconds(_ value: Double) -> String {
        value >= 100 ? String(format: "%.1f", value) : String(format: "%.4f", value)
    }

    private static func bytes(_ value: UInt64) -> String {
        switch value {
        case ..<10_000: return "\(value) B"
        case ..<10_000_000: return "\(value / 1_000) kB"
        default: return "\(value / 1_000_000) MB"
        }
    }

    private static func pad(_ text: String, _ width: Int) -> String { ResultFormatter.pad(text, width) }

    private static func lpad(_ text: String, _ width: Int) -> String { ResultFormatter.lpad(text, width) }
}
