import Foundation
import KilnPredict
import KilnWire
import Testing

@Suite("Execution history")
struct ExecutionHistoryTests {
    func record(_ index: Int, at time: UInt64) -> ExecutionRecord {
        let outcome = ExecutionOutcome(
            features: PlacementFeatures(method: "m\(index % 3)", argsBytes: index, numericArgs: ["ms": Double(index), "data.len": 4_096],
                                        profile: "small", backend: "qemu", warmth: .warm, reuseCount: index, hostCPU: 0.25),
            provisionUs: 0, execUs: Double(1_000 + index), succeeded: true)
        return ExecutionRecord(invocationID: "i\(index)", recordedAtUs: time, outcome: outcome, predictedUs: 900, predictor: "rls",
                               placement: "idle q1 (warm): predicted 900 µs\nnew small VM: predicted 40000 µs")
    }

    @Test func storesRecordsAndKeepsWithinItsRetention() throws {
        let history = try ExecutionHistory(path: ":memory:", retention: HistoryRetention(maxRecords: 50, maxAge: .seconds(3_600)))
        try history.append((0..<40).map { record($0, at: 1_000_000_000 + UInt64($0)) })
        try history.append((40..<80).map { record($0, at: 1_000_000_000 + UInt64($0)) })
        let all = try history.all()
        #expect(all.count == 50)
        #expect(all.first?.invocationID == "i30")
        #expect(all.last == record(79, at: 1_000_000_079))
        // Records older than the maximum age go.
        try history.append([record(100, at: 1_000_000_000 + 7_200_000_000)])
        #expect(try history.count() == 1)
        #expect(try history.records(invocationID: "i100").first?.outcome.features.numericArgs == ["ms": 100, "data.len": 4_096])
    }

    @Test func aRecordRoundTripsItsOutcomeAndWritesCSV() {
        let original = record(7, at: 42)
        #expect(original.outcome.features.method == "m1")
        #expect(original.outcome.execUs == 1_007)
        #expect(ExecutionRecord.csvHeader.hasPrefix("invocation_id,recorded_at_us,method,"))
        #expect(original.csvLine.hasPrefix("i7,42,m1,7,data.len=4096.0;ms=7.0,small,1,128,qemu,warm,7,0.25,"))
        #expect(original.csvLine.hasSuffix(",rls,,\"idle q1 (warm): predicted 900 µs\nnew small VM: predicted 40000 µs\",,,,,"))
        var measured = original
        measured.usage = InvocationResult.Usage(cpuUs: 1, hostCPUUs: 2, peakMemoryKB: 3, bytesIn: 4, bytesOut: 5)
        #expect(measured.csvLine.hasSuffix("40000 µs\",1,2,3,4,5"))
        #expect(ExecutionRecord.csvHeader.hasSuffix(",usage_cpu_us,usage_host_cpu_us,usage_peak_memory_kb,usage_bytes_in,usage_bytes_out"))
    }

    @Test func replaySkipsRecordsOfAnotherSchemaAndWithNumbersThatAreNotFinite() throws {
        var older = record(1, at: 10)
        older.schema = nil
        var poisoned = record(2, at: 11)
        poisoned.numericArgs = "ms=inf"
        var poisonedLoad = record(3, at: 12)
        poisonedLoad.hostCPU = .infinity
        let predictor = LearnedPredictor()
        let replay = HistoryReplay.replay([older, poisoned, poisonedLoad] + (4..<10).map { record($0, at: 20 + UInt64($0)) }, into: predictor)
        #expect((replay.replayed, replay.otherSchema, replay.notFinite) == (6, 1, 2))
        #expect(replay.description.contains("skipped 1 of another feature schema and 2 with numbers that are not finite"))
        #expect(predictor.rejectedUpdates == 0)
        // A history keeps the version of what it holds.
        let history = try ExecutionHistory(path: ":memory:")
        try history.append([older])
        #expect(try history.all().first?.featureSchema == 1)
    }

    /// A worker replays its history a page at a time, so that its memory at start does not grow
    /// with the history (the soak saw 98 MiB at 40,000 records when it read them all at once).
    @Test func theHistoryIsReplayedPageByPageInOrder() throws {
        let history = try ExecutionHistory(path: ":memory:")
        var older = record(0, at: 1)
        older.schema = nil
        try history.append([older] + (1..<10).map { record($0, at: 1 + UInt64($0)) })
        var seen: [String] = []
        try history.forEach(pageSize: 3) { seen.append($0.invocationID) }
        #expect(seen == (0..<10).map { "i\($0)" })
        let paged = try HistoryReplay.replay(history, into: LearnedPredictor())
        let whole = HistoryReplay.replay(try history.all(), into: LearnedPredictor())
        #expect((paged.replayed, paged.otherSchema) == (9, 1))
        #expect((paged.replayed, paged.otherSchema, paged.notFinite) == (whole.replayed, whole.otherSchema, whole.notFinite))
    }

    @Test func aRecordThatIsNotFiniteIsLeftOutWithoutLosingTheRestOfItsBatch() throws {
        let history = try ExecutionHistory(path: ":memory:")
        var poisoned = record(2, at: 11)
        poisoned.hostCPU = .nan
        #expect(try history.append([record(1, at: 10), poisoned, record(3, at: 12)]) == 1)
        #expect(try history.all().map(\.invocationID) == ["i1", "i3"])
    }

    /// `kiln usage` reads this: each method's runs, time, GB-seconds and CPU, from a moment on.
    @Test func theHistoryKeepsUsageAndSumsItPerMethod() throws {
        let history = try ExecutionHistory(path: ":memory:")
        var records = (0..<6).map { index in
            var measured = record(index, at: 1_000 + UInt64(index))
            measured.usage = InvocationResult.Usage(
                cpuUs: 500, hostCPUUs: 2_000, peakMemoryKB: UInt64(1_000 * index), bytesIn: 10, bytesOut: 20)
            return measured
        }
        records.append(record(9, at: 2_000))  // m0, as a Kiln before usage recorded it
        try history.append(records)
        #expect(try history.records(invocationID: "i3").first?.usage == records[3].usage)
        #expect(try history.records(invocationID: "i9").first?.usage == nil)

        let all = try history.usage()
        #expect(all.map(\.method) == ["m0", "m1", "m2"])
        let m0 = try #require(all.first)
        #expect(m0.invocations == 3 && m0.measuredInvocations == 2)
        #expect(abs(m0.execSeconds - Double(1_000 + 1_003 + 1_009) / 1e6) < 1e-12)
        #expect(abs(m0.gbSeconds - 128.0 / 1_024 * Double(1_000 + 1_003 + 1_009) / 1e6) < 1e-12)
        #expect(m0.cpuSeconds == 0.001 && m0.hostCPUSeconds == 0.004)
        #expect(m0.peakMemoryKB == 3_000 && m0.bytesIn == 20 && m0.bytesOut == 40)

        let recent = try history.usage(sinceUs: 1_004)
        #expect(recent.map(\.method) == ["m0", "m1", "m2"] && recent.map(\.invocations) == [1, 1, 1])
        #expect(recent.first?.cpuSeconds == nil, "m0's one recent run measured nothing")
        #expect(try history.usage(method: "m1").map(\.invocations) == [2])
        #expect(try history.usage(method: "none").isEmpty)

        // A guest's or an imported file's 64-bit numbers: kept, clamped, and summed without overflow.
        var huge = record(20, at: 3_000)
        huge.usage = InvocationResult.Usage(cpuUs: .max, hostCPUUs: .max, peakMemoryKB: .max, bytesIn: .max, bytesOut: .max)
        huge.deadlineMs = .max
        try history.append([huge, huge])
        let stored = try #require(try history.records(invocationID: "i20").first)
        #expect(stored.deadlineMs == UInt64(Int64.max) && stored.usageCPUUs == UInt64(Int64.max))
        let m2 = try #require(try history.usage(method: "m2").first)
        #expect(m2.invocations == 4 && (m2.cpuSeconds ?? 0) > 1e13, "\(m2)")
    }

    @Test func anExportOfAnOlderKilnStillReads() throws {
        // A record as an older Kiln wrote it: no schema, no network, no dependencies, no deadline.
        let old: MessagePackValue = [
            "invocation_id": "x", "recorded_at_us": 1, "method": "echo", "args_bytes": 10, "numeric_args": "", "profile": "small",
            "vcpus": 1, "memory_mb": 128, "backend": "qemu", "warmth": "warm", "reuse_count": 0, "host_cpu": 0.1, "memory_pressure": 0,
            "concurrent_executions": 0, "queue_depth": 0, "idle_vms": 1, "provisions_in_flight": 0, "provision_us": 0, "exec_us": 900,
            "succeeded": true,
        ]
        let decoded = try MessagePackDecoder().decode([ExecutionRecord].self, from: MessagePackEncoder().encode([old]))
        #expect(decoded.first?.featureSchema == 1)
        #expect(HistoryReplay.usable(decoded).summary.otherSchema == 1)
    }

    @Test func evaluationReplaysAndMeasures() {
        let records = (0..<100).map { index -> ExecutionRecord in
            let outcome = ExecutionOutcome(
                features: PlacementFeatures(method: "sleep", numericArgs: ["ms": Double(index % 10) * 10], profile: "small",
                                            backend: "qemu", warmth: .warmForMethod),
                provisionUs: 0, execUs: Double(index % 10) * 10_000 + 2_000, succeeded: true)
            return ExecutionRecord(invocationID: "\(index)", recordedAtUs: UInt64(index), outcome: outcome)
        }
        let evaluation = PredictionEvaluation(trainingShare: 0.8)
        let learned = evaluation.run(records) { LearnedPredictor() }
        let average = evaluation.run(records) { EWMAPredictor() }
        #expect(learned.overall.count == 20)
        #expect(learned.overall.mape < average.overall.mape)
    }
}
