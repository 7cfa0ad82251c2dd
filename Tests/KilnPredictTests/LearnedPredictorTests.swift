import Foundation
import KilnPredict
import Testing

@Suite("Learned latency model")
struct LearnedPredictorTests {
    @Test func leastSquaresRecoversALinearFunction() {
        var model = RecursiveLeastSquares(dimension: 3, forgetting: 1)
        var random = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let x = Double.random(in: 0...10, using: &random)
            let z = Double.random(in: -5...5, using: &random)
            model.update([1, x, z], target: 3 + 2 * x - 0.5 * z)
        }
        #expect(abs(model.weights[0] - 3) < 1e-3)
        #expect(abs(model.weights[1] - 2) < 1e-3)
        #expect(abs(model.weights[2] + 0.5) < 1e-3)
        #expect(abs(model.predict([1, 4, 2]) - 10) < 1e-3)
    }

    func outcome(_ method: String, ms: Double, cpu: Double, warmth: VMWarmth = .warmForMethod) -> ExecutionOutcome {
        // Exec grows with `ms` and slows by half under full CPU load, with a fixed 5 ms on top.
        let exec = (ms * 1_000 + 5_000) * (1 + 0.5 * cpu) * (warmth == .fresh ? 3 : 1)
        return ExecutionOutcome(
            features: PlacementFeatures(method: method, numericArgs: ["ms": ms], profile: "small", backend: "qemu",
                                        warmth: warmth, hostCPU: cpu),
            provisionUs: 0, execUs: exec, succeeded: true)
    }

    @Test func learnsHowArgsLoadAndWarmthSetTheLatencyWhereAnAverageCannot() {
        let learned = LearnedPredictor()
        let average = EWMAPredictor()
        var random = SystemRandomNumberGenerator()
        for _ in 0..<400 {
            let sample = outcome("work", ms: Double.random(in: 5...200, using: &random), cpu: Double.random(in: 0...1, using: &random),
                                 warmth: Int.random(in: 0..<8, using: &random) == 0 ? .fresh : .warmForMethod)
            learned.observe(sample)
            average.observe(sample)
        }
        var learnedError = 0.0
        var averageError = 0.0
        for (ms, cpu) in [(10.0, 0.1), (150.0, 0.9), (60.0, 0.5), (190.0, 0.0)] {
            let truth = outcome("work", ms: ms, cpu: cpu)
            learnedError += abs(learned.predict(truth.features).execUs - truth.execUs) / truth.execUs
            averageError += abs(average.predict(truth.features).execUs - truth.execUs) / truth.execUs
        }
        #expect(learnedError / 4 < 0.1, "learned MAPE \(learnedError / 4)")
        #expect(learnedError < averageError / 3)
        // A fresh VM is slower, and the model knows it.
        let fresh = learned.predict(outcome("work", ms: 50, cpu: 0.2, warmth: .fresh).features)
        let warm = learned.predict(outcome("work", ms: 50, cpu: 0.2).features)
        #expect(fresh.execUs > 2 * warm.execUs)
    }

    @Test func learnsThatALargerVMRunsAParallelMethodFaster() {
        let learned = LearnedPredictor()
        func sample(vcpus: Int) -> ExecutionOutcome {
            ExecutionOutcome(
                features: PlacementFeatures(method: "render", numericArgs: ["frames": 100], profile: vcpus == 1 ? "small" : "large",
                                            vcpus: vcpus, memoryMB: 128 * vcpus, backend: "qemu", warmth: .warmForMethod),
                provisionUs: 0, execUs: 80_000 / Double(vcpus), succeeded: true)
        }
        for index in 0..<80 { learned.observe(sample(vcpus: index % 4 == 0 ? 2 : 1)) }
        let small = learned.predict(sample(vcpus: 1).features).execUs
        let large = learned.predict(sample(vcpus: 2).features).execUs
        #expect(abs(small - 80_000) < 8_000 && abs(large - 40_000) < 4_000, "1 vCPU \(small) µs, 2 vCPUs \(large) µs")
    }

    @Test func predictsProvisioningForAVMThatDoesNotExistYet() {
        let learned = LearnedPredictor()
        for index in 0..<60 {
            let inFlight = 1 + index % 4
            learned.observeProvisioning(ProvisionOutcome(
                backend: "qemu", profile: "small", durationUs: 20_000 * Double(inFlight), concurrentProvisions: inFlight))
        }
        let features = PlacementFeatures(method: "new", profile: "small", backend: "qemu", warmth: .notProvisioned, provisionsInFlight: 3)
        let prediction = learned.predict(features)
        #expect(abs(prediction.provisionUs - 80_000) < 16_000, "predicted \(prediction.provisionUs)")
        #expect(prediction.totalUs > prediction.provisionUs)
    }

    @Test func fewSamplesFallBackToTheAverages() {
        let learned = LearnedPredictor()
        for _ in 0..<3 { learned.observe(outcome("rare", ms: 10, cpu: 0)) }
        #expect(abs(learned.predict(outcome("rare", ms: 10, cpu: 0).features).execUs - 15_000) < 1)
    }
}

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
        #expect(original.csvLine.hasSuffix(",rls,\"idle q1 (warm): predicted 900 µs\nnew small VM: predicted 40000 µs\""))
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
        #expect(CalibrationPlot.svg([learned, average], title: "test").contains("<circle"))
    }
}
