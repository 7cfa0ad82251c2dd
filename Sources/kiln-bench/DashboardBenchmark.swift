import ArgumentParser
import Foundation
import KilnDashboard
import KilnWire
import Logging

/// `kiln-bench dashboard`: what `kiln dashboard` spends per telemetry event and per rendering
/// of its window, beside decoding the event alone (the floor) in the same run.
struct DashboardBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "The dashboard's hot paths: taking an event into the window, against decoding it alone; rendering a full window as JSON."
    )

    @Option(help: "Seconds to measure each row.")
    var seconds: Double = 2

    func run() throws {
        let logger = Logger(label: "kiln-bench.dashboard") { _ in SwiftLogNoOpLogHandler() }
        let completed = try MessagePackEncoder().encode(Self.invocation(index: 0, method: "echo"))
        let sample = try MessagePackEncoder().encode(Self.sample(worker: "w0"))
        let decoder = MessagePackDecoder()
        print("kiln-bench dashboard: best of 5 rounds over \(seconds) s per row")
        var table = TextTable("event", "path", "body bytes", "events/s", "µs/event", "vs decoding alone")
        for (name, body) in [("invocation.completed, 4 candidates", completed), ("host.sample, 2 pools", sample)] {
            let floor = try bestRate(seconds: seconds) { _ = try decoder.decode(TelemetryEvent.self, from: body) }
            let hub = DashboardHub(logger: logger)
            let ingest = bestRate(seconds: seconds) { hub.ingest(body: body) }
            table.add(name, "decode (the floor)", formatted(Double(body.count)), formatted(floor), formatted(1e6 / floor, decimals: 2), "1.00x")
            table.add("", "decode + into the window", "", formatted(ingest), formatted(1e6 / ingest, decimals: 2),
                      formatted(floor / ingest, decimals: 2) + "x the time")
        }
        print(table.render())

        // A full window: 300 s of invocations of 32 methods, 20 workers with 2 pools each.
        let clock = Clock()
        let hub = DashboardHub(now: { clock.now }, logger: logger)
        for second in 0..<300 {
            clock.now = 1_796_313_600_000_000 + UInt64(second) * 1_000_000
            for index in 0..<200 { hub.ingest(body: try MessagePackEncoder().encode(Self.invocation(index: index, method: "m\(index % 32)"))) }
            for worker in 0..<20 { hub.ingest(body: try MessagePackEncoder().encode(Self.sample(worker: "w\(worker)"))) }
        }
        let bytes = try hub.snapshot().json().count
        let renders = try bestRate(seconds: seconds) { _ = try hub.snapshot().json() }
        print("")
        print("A full window (300 s at 200 invocations/s of 32 methods, 20 workers with 2 pools): one rendering")
        print("  \(formatted(Double(bytes) / 1024, decimals: 0)) KiB of JSON, \(formatted(1e3 / renders, decimals: 2)) ms (\(formatted(renders)) renderings/s);")
        print("  rendered once a second and the same bytes written to every viewer, so 100 viewers cost one rendering, not 100.")
    }

    /// A clock the benchmark sets.
    final class Clock: @unchecked Sendable {
        var now: UInt64 = 0
    }

    static func invocation(index: Int, method: String) -> TelemetryEvent {
        let candidates = (0..<4).map { (slot: Int) -> TelemetryEvent.Placement.Candidate in
            let new = slot == 3
            let predicted: UInt64 = 1_200 + UInt64(slot) * 15_000
            return TelemetryEvent.Placement.Candidate(
                place: new ? "new" : "q\(slot)-3f2a", warmth: new ? "cold" : "warm_method", predictedUs: predicted,
                uncertaintyUs: 80, suitability: 800 / Double(slot + 1), chosen: slot == 0, resourceFactor: new ? 1.12 : 1.0)
        }
        return TelemetryEvent(host: "host-a", worker: "host-a-1", atUs: 1_796_313_600_000_000, payload: .invocationCompleted(.init(
            id: "inv-\(index)", method: method, status: .ok, vm: "q0-3f2a", cold: false, execUs: 1_100 + UInt64(index % 7) * 100,
            totalUs: 2_300, predictedUs: 1_200, provisionUs: 0, placement: .init(model: "ridge", candidates: candidates))))
    }

    static func sample(worker: String) -> TelemetryEvent {
        TelemetryEvent(host: "host-\(worker)", worker: worker, atUs: 1_796_313_600_000_000, payload: .hostSample(.init(
            cpuUtil: 0.4, memAvailableMB: 20_000, memPressure: 0.01, netRxBps: 100_000, netTxBps: 80_000, vmsIdle: 4, vmsBusy: 2,
            backend: "qemu", pools: [.init(profile: "small", idle: 4, busy: 2, target: 4, waiting: 0),
                                     .init(profile: "medium", idle: 0, busy: 0, target: 0, waiting: 0)], memTotalMB: 24_000)))
    }
}
