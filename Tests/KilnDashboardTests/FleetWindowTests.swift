import Foundation
import KilnDashboard
import KilnWire
import Testing

/// The dashboard's window: what it keeps of each kind of event, its bounds, and what a hostile
/// publisher cannot make it do (grow, or hold a number JSON cannot carry).
@Suite("The dashboard's window")
struct FleetWindowTests {
    /// A realistic Unix time, µs (2026-12-03), so that seconds land where a real clock puts them.
    static let start: UInt64 = 1_796_313_600_000_000
    static let feed = DashboardSnapshot.FeedStatus()

    static func completed(
        _ id: String, method: String = "echo", status: InvocationResult.Status = .ok, cold: Bool = false, totalUs: UInt64 = 1_000,
        predictedUs: UInt64? = 900, provisionUs: UInt64 = 0, candidates: Int = 2
    ) -> TelemetryEvent {
        let placement = TelemetryEvent.Placement(model: "ridge", candidates: (0..<candidates).map { (index: Int) -> TelemetryEvent.Placement.Candidate in
            let new = index == candidates - 1
            let predicted: UInt64 = 900 + UInt64(index) * 10_000
            return TelemetryEvent.Placement.Candidate(
                place: new ? "new" : "vm-\(index)", warmth: new ? "cold" : "warm", predictedUs: predicted, uncertaintyUs: 50,
                suitability: 10 - Double(index), chosen: index == 0, resourceFactor: new ? 1.2 : 1.0)
        })
        return TelemetryEvent(host: "h", worker: "w", atUs: 0, payload: .invocationCompleted(.init(
            id: id, method: method, status: status, vm: "vm-0", cold: cold, execUs: totalUs - 100, totalUs: totalUs,
            predictedUs: predictedUs, provisionUs: provisionUs, placement: placement)))
    }

    static func sample(worker: String, idle: UInt32 = 2, cpu: Double = 0.25) -> TelemetryEvent {
        TelemetryEvent(host: "host-\(worker)", worker: worker, atUs: 0, payload: .hostSample(.init(
            cpuUtil: cpu, memAvailableMB: 1_000, memPressure: 0, netRxBps: 10, netTxBps: 20, vmsIdle: idle, vmsBusy: 1,
            backend: "qemu", pools: [.init(profile: "small", idle: idle, busy: 1, target: 2, waiting: 3)], memTotalMB: 2_000)))
    }

    @Test func invocationsCountByStatusAndStartWithTheirPercentiles() throws {
        var window = FleetWindow()
        for index in 0..<100 {
            window.ingest(Self.completed("w\(index)", totalUs: UInt64(index + 1) * 1_000), nowUs: Self.start + 500_000)
        }
        window.ingest(Self.completed("c", cold: true, totalUs: 50_000), nowUs: Self.start + 600_000)
        window.ingest(Self.completed("e", status: .error), nowUs: Self.start + 700_000)
        let snapshot = window.snapshot(nowUs: Self.start + 900_000, feed: Self.feed)
        let last = try #require(snapshot.rates.last)
        #expect(last.ok == 101 && last.error == 1)
        #expect(last.warm == 101 && last.cold == 1)
        #expect(last.warmP50Ms == 50 && last.warmP99Ms == 99, "\(last)")
        #expect(last.coldP50Ms == 50)
        // Every other bucket of the window is empty, and the buckets end with the current second.
        #expect(snapshot.rates.dropLast().allSatisfy { $0.ok + $0.error + $0.cold + $0.warm == 0 })
        #expect(last.startS + UInt64(snapshot.bucketSeconds) - 1 == (Self.start + 900_000) / 1_000_000)
        // Out of the window, they are gone.
        let later = window.snapshot(nowUs: Self.start + 400_000_000, feed: Self.feed)
        #expect(later.rates.allSatisfy { $0.ok == 0 })
    }

    @Test func theLatestInvocationsKeepTheirPlacementsAndTheScatterItsPoints() throws {
        var limits = FleetWindow.Limits()
        limits.invocations = 5
        limits.pointsPerMethod = 3
        var window = FleetWindow(limits: limits)
        for index in 0..<8 {
            window.ingest(Self.completed("i\(index)", totalUs: 2_000, provisionUs: 500), nowUs: Self.start + UInt64(index))
        }
        // A failure is listed, but says nothing of the model: no point.
        window.ingest(Self.completed("fail", status: .timeout), nowUs: Self.start + 9)
        let snapshot = window.snapshot(nowUs: Self.start + 10, feed: Self.feed)
        #expect(snapshot.invocations.map(\.id) == ["fail", "i7", "i6", "i5", "i4"])
        let newest = try #require(snapshot.invocations.dropFirst().first)
        #expect(newest.candidates.count == 2 && newest.candidates.filter(\.chosen).map(\.place) == ["vm-0"])
        #expect(newest.candidates.last?.resourceFactor == 1.2)
        // Predicted against measured: the prediction covers provisioning and the run.
        let echo = try #require(snapshot.scatter.first { $0.method == "echo" })
        #expect(echo.points.count == 3)
        #expect(echo.points.allSatisfy { $0.predictedUs == 900 && $0.measuredUs == 1_900 + 500 })
    }

    @Test func aPublisherInventingMethodsCannotGrowTheScatter() {
        var limits = FleetWindow.Limits()
        limits.methods = 4
        var window = FleetWindow(limits: limits)
        for index in 0..<1_000 {
            window.ingest(Self.completed("i\(index)", method: "m\(index)"), nowUs: Self.start + UInt64(index))
        }
        let snapshot = window.snapshot(nowUs: Self.start + 2_000, feed: Self.feed)
        // The most recently seen methods stay.
        #expect(snapshot.scatter.map(\.method) == ["m996", "m997", "m998", "m999"])
    }

    @Test func workersShowTheirLatestSampleGoSilentAndAreForgotten() throws {
        var window = FleetWindow()
        window.ingest(Self.sample(worker: "a", idle: 1), nowUs: Self.start)
        window.ingest(Self.sample(worker: "a", idle: 4), nowUs: Self.start + 1_000_000)
        window.ingest(Self.sample(worker: "b"), nowUs: Self.start + 9_000_000)
        let snapshot = window.snapshot(nowUs: Self.start + 9_500_000, feed: Self.feed)
        let a = try #require(snapshot.workers.first { $0.worker == "a" })
        #expect(a.host == "host-a" && a.backend == "qemu" && a.vmsIdle == 4 && a.memTotalMb == 2_000)
        #expect(a.pools == [PoolView(profile: "small", idle: 4, busy: 1, target: 2, waiting: 3)])
        #expect(a.gone, "silent for 8.5 s")
        #expect(snapshot.workers.first { $0.worker == "b" }?.gone == false)
        let series = try #require(snapshot.pools.first { $0.worker == "a" && $0.profile == "small" })
        #expect(series.points.map(\.idle) == [1, 4])
        // Ten minutes of silence and a sample from another: a is forgotten.
        window.ingest(Self.sample(worker: "b"), nowUs: Self.start + 700_000_000)
        #expect(window.snapshot(nowUs: Self.start + 700_000_000, feed: Self.feed).workers.map(\.worker) == ["b"])
    }

    @Test func vmEventsKeepTheirReasonsNewestFirst() {
        var window = FleetWindow()
        window.ingest(TelemetryEvent(host: "h", worker: "w", atUs: 0, payload: .vmCreated(.init(
            vm: "vm-1", backend: "qemu", profile: "small", bootUs: 45_000, mode: "restore", reason: "replenish to idle target 2"))),
                      nowUs: Self.start)
        window.ingest(TelemetryEvent(host: "h", worker: "w", atUs: 0, payload: .vmDestroyed(.init(
            vm: "vm-1", reason: "max_uses", lifetimeUs: 30_000_000, uses: 100))), nowUs: Self.start + 1)
        let snapshot = window.snapshot(nowUs: Self.start + 2, feed: Self.feed)
        #expect(snapshot.vmEvents.map(\.kind) == ["destroyed", "created"])
        #expect(snapshot.vmEvents.last?.reason == "replenish to idle target 2")
        #expect(snapshot.vmEvents.last?.detail == "restore in 45.0 ms")
        #expect(snapshot.vmEvents.first?.detail == "after 100 uses, 30.0 s")
        #expect(snapshot.totals.vmsCreated == 1 && snapshot.totals.vmsDestroyed == 1)
    }

    @Test func whatAPublisherSendsIsCutToSizeAndNaNNeverReachesTheJSON() throws {
        var window = FleetWindow()
        let long = String(repeating: "x", count: 100_000)
        window.ingest(Self.completed(long, method: long), nowUs: Self.start)
        window.ingest(Self.sample(worker: long, cpu: .nan), nowUs: Self.start)
        let snapshot = window.snapshot(nowUs: Self.start + 1, feed: Self.feed)
        #expect(snapshot.invocations.first?.id.utf8.count == 128)
        #expect(snapshot.invocations.first?.method.utf8.count == 128)
        #expect(snapshot.workers.first?.worker.utf8.count == 128)
        #expect(snapshot.workers.first?.cpuUtil == 0)
        // One character with a megabyte of combining marks is cut by its bytes, not kept whole.
        window.ingest(Self.completed("e" + String(repeating: "\u{301}", count: 500_000)), nowUs: Self.start + 2)
        let marked = try #require(window.snapshot(nowUs: Self.start + 3, feed: Self.feed).invocations.first)
        #expect(marked.id.utf8.count <= 128 && marked.id.hasSuffix("…"))
        // The JSON encodes (NaN would throw) and stays small.
        #expect(try snapshot.json().count < 20_000)
    }
}
