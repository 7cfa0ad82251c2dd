import Foundation
import KilnPredict
import Synchronization
import Testing

@Suite("Learned latency model")
struct LearnedPredictorTests {
    func outcome(_ method: String, ms: Double, cpu: Double, warmth: VMWarmth = .warmForMethod, deadlineMs: UInt64 = 0) -> ExecutionOutcome {
        // Exec grows with `ms` and slows by half under full CPU load, with a fixed 5 ms on top.
        let exec = (ms * 1_000 + 5_000) * (1 + 0.5 * cpu) * (warmth == .fresh ? 3 : 1)
        return ExecutionOutcome(
            features: PlacementFeatures(method: method, numericArgs: ["ms": ms], profile: "small", backend: "qemu",
                                        warmth: warmth, hostCPU: cpu, deadlineMs: deadlineMs),
            provisionUs: 0, execUs: exec, succeeded: true)
    }

    func train(_ predictors: [any LatencyPredictor], count: Int = 400, seed: UInt64 = 1, freshShare: Double = 1.0 / 8) {
        var random = TestRandom(seed: seed)
        for _ in 0..<count {
            let sample = outcome("work", ms: Double.random(in: 5...200, using: &random), cpu: Double.random(in: 0...1, using: &random),
                                 warmth: Double.random(in: 0...1, using: &random) < freshShare ? .fresh : .warmForMethod)
            for predictor in predictors { predictor.observe(sample) }
        }
    }

    @Test func learnsHowArgsLoadAndWarmthSetTheLatencyWhereAnAverageCannot() {
        let learned = LearnedPredictor()
        let average = EWMAPredictor()
        train([learned, average])
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
        func sample(vcpus: Int, frames: Double) -> ExecutionOutcome {
            ExecutionOutcome(
                features: PlacementFeatures(method: "render", numericArgs: ["frames": frames], profile: vcpus == 1 ? "small" : "large",
                                            vcpus: vcpus, memoryMB: 128 * vcpus, backend: "qemu", warmth: .warmForMethod),
                provisionUs: 0, execUs: 800 * frames / Double(vcpus), succeeded: true)
        }
        for index in 0..<120 { learned.observe(sample(vcpus: index % 4 == 0 ? 2 : 1, frames: Double(50 + index % 100))) }
        let small = learned.predict(sample(vcpus: 1, frames: 100).features).execUs
        let large = learned.predict(sample(vcpus: 2, frames: 100).features).execUs
        #expect(abs(small - 80_000) < 8_000 && abs(large - 40_000) < 4_000, "1 vCPU \(small) µs, 2 vCPUs \(large) µs")
    }

    @Test func learnsWhatNetworkLoadOnTheHostCosts() {
        let learned = LearnedPredictor()
        var random = TestRandom(seed: 4)
        func sample(_ megabytesPerSecond: Double) -> ExecutionOutcome {
            ExecutionOutcome(
                features: PlacementFeatures(method: "fetch", profile: "small", backend: "qemu", warmth: .warmForMethod,
                                            networkBps: megabytesPerSecond * 1_000_000),
                provisionUs: 0, execUs: 10_000 * (1 + megabytesPerSecond / 20), succeeded: true)
        }
        for _ in 0..<200 { learned.observe(sample(Double.random(in: 0...100, using: &random))) }
        let quiet = learned.predict(sample(0).features).execUs
        let busy = learned.predict(sample(90).features).execUs
        #expect(busy > 3 * quiet, "quiet \(quiet) µs, busy network \(busy) µs")
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

    /// `kiln explain` showed the new VM at 3.2 s where a restore takes 25 ms: the template's
    /// first boot had been learned as a restore.
    @Test func aTemplatesFirstBootIsNotLearnedAsARestore() {
        for predictor in [LearnedPredictor() as any LatencyPredictor, EWMAPredictor()] {
            predictor.observeProvisioning(ProvisionOutcome(backend: "qemu", profile: "small", mode: "boot", durationUs: 1_800_000))
            for _ in 0..<30 {
                predictor.observeProvisioning(ProvisionOutcome(backend: "qemu", profile: "small", mode: "restore", durationUs: 25_000))
            }
            let next = predictor.predict(PlacementFeatures(method: "echo", profile: "small", backend: "qemu", warmth: .notProvisioned))
            #expect(abs(next.provisionUs - 25_000) < 1_000, "\(predictor.name) predicted \(next.provisionUs) µs")
        }
    }

    @Test func fewSamplesFallBackToTheAverages() {
        let learned = LearnedPredictor()
        for _ in 0..<3 { learned.observe(outcome("rare", ms: 10, cpu: 0)) }
        #expect(!learned.isLive("rare"))
        #expect(abs(learned.predict(outcome("rare", ms: 10, cpu: 0).features).execUs - 15_000) < 1)
    }

    @Test func goesLiveOnlyWithSeveralTimesMoreOutcomesThanColumnsInUse() {
        let learned = LearnedPredictor()
        var random = TestRandom(seed: 5)
        var liveAt: Int?
        for index in 1...200 where liveAt == nil {
            learned.observe(outcome("work", ms: Double.random(in: 5...200, using: &random), cpu: Double.random(in: 0...1, using: &random)))
            if learned.isLive("work") { liveAt = index }
        }
        // Columns in use: cpu, ms and ms² (constant ones are left out), plus the intercept: 4 × 5.
        #expect(liveAt == 20)
    }

    @Test func anArgument100TimesPastItsRangeStaysNearTheMovingAverage() {
        let learned = LearnedPredictor()
        let average = EWMAPredictor()
        train([learned, average], freshShare: 0)
        for ms in [2_000.0, 20_000, 200_000] {
            let far = outcome("work", ms: ms, cpu: 0.5).features
            let ratio = learned.predict(far).execUs / average.predict(far).execUs
            #expect(ratio < 200 && ratio > 1 / 200, "\(ms) ms: \(ratio)× the moving average")
        }
        // Inside the range it is the model's prediction, not the average's.
        let inside = outcome("work", ms: 190, cpu: 0)
        #expect(abs(learned.predict(inside.features).execUs - inside.execUs) / inside.execUs < 0.1)
    }

    @Test func neverPredictsPastTheDeadlineNorBelowTheFastestRunItSaw() {
        let learned = LearnedPredictor(fallback: EWMAPredictor(defaults: .init(deadlineGrace: .seconds(5))))
        train([learned], freshShare: 0)
        // A sleep of 500 s under a deadline of 500 ms: at most 0.5 s + 5 s of grace.
        let capped = learned.predict(outcome("work", ms: 500_000, cpu: 1, deadlineMs: 500).features)
        #expect(capped.execUs <= 5_500_000)
        #expect(capped.uncertaintyUs <= 5_500_000)
        // Negative work: no prediction below half the fastest exec seen (5 ms + 5 × 1 ms at least).
        let floor = learned.predict(outcome("work", ms: -1e12, cpu: 0).features)
        #expect(floor.execUs >= 5_000)
        // The moving average is held to the deadline too.
        let average = EWMAPredictor()
        average.observe(outcome("slow", ms: 100_000, cpu: 0))
        #expect(average.predict(outcome("slow", ms: 100_000, cpu: 0, deadlineMs: 1_000).features).execUs <= 6_000_000)
    }

    @Test func refusesAndCountsOutcomesThatAreNotFinite() {
        let reasons = Mutex<[LearnedPredictor.Rejection]>([])
        let learned = LearnedPredictor { reason in reasons.withLock { $0.append(reason) } }
        train([learned], freshShare: 0)
        var broken = outcome("work", ms: 10, cpu: 0)
        broken.features.numericArgs["ms"] = .nan
        learned.observe(broken)
        broken = outcome("work", ms: 10, cpu: 0)
        broken.features.hostCPU = .infinity
        learned.observe(broken)
        broken = outcome("work", ms: 10, cpu: 0)
        broken.execUs = .infinity
        learned.observe(broken)
        #expect(learned.rejectedUpdates == 3)
        #expect(reasons.withLock { $0 } == [.nonFiniteInput, .nonFiniteInput, .nonFiniteInput])
        let prediction = learned.predict(outcome("work", ms: 50, cpu: 0.5).features)
        #expect(prediction.execUs.isFinite && prediction.uncertaintyUs.isFinite)
        #expect(learned.isLive("work"))
    }

    @Test func aMethodWithHeavyDependenciesIsSlowerOnAVMThatHasNotLoadedThem() {
        let learned = LearnedPredictor()
        let invocation = InvocationTraits(
            method: "classify", args: ["n": 1], argsBytes: 20, deadlineMs: 30_000,
            dependencies: MethodDependencies(names: ["runtime:python3", "file:/app/model.bin"], sizeMB: 200))
        let loaded = CandidateVM.Past(lastMethod: "classify", uses: 4, loadedDependencies: ["runtime:python3", "file:/app/model.bin"])
        let load = HostLoad(cpu: 0.1, memoryPressure: 0, networkBps: 0, concurrentExecutions: 0)
        func features(_ past: CandidateVM.Past?) -> PlacementFeatures {
            PlacementFeatures(invocation: invocation, vm: CandidateVM(profile: "small", vcpus: 1, memoryMB: 512, backend: "qemu", past: past), load: load)
        }
        // Only warm runs so far: the model has never seen it without its dependencies.
        for _ in 0..<60 { learned.observe(ExecutionOutcome(features: features(loaded), provisionUs: 0, execUs: 8_000, succeeded: true)) }
        let warm = learned.predict(features(loaded)).execUs
        let sharedRuntime = features(CandidateVM.Past(lastMethod: "other", uses: 2, loadedDependencies: ["runtime:python3"]))
        #expect(sharedRuntime.unloadedDependencyMB == 100)
        let fresh = learned.predict(features(CandidateVM.Past(lastMethod: nil, uses: 0, loadedDependencies: []))).execUs
        let partly = learned.predict(sharedRuntime).execUs
        #expect(fresh > warm + 300_000, "warm \(warm) µs, fresh \(fresh) µs")
        #expect(partly > warm && partly < fresh)
        // Once it has run on fresh VMs, what it learned there counts.
        for index in 0..<120 {
            let past = index.isMultiple(of: 3) ? CandidateVM.Past(lastMethod: nil, uses: 0, loadedDependencies: []) : loaded
            learned.observe(ExecutionOutcome(features: features(past), provisionUs: 0, execUs: index.isMultiple(of: 3) ? 900_000 : 8_000, succeeded: true))
        }
        let learnedFresh = learned.predict(features(CandidateVM.Past(lastMethod: nil, uses: 0, loadedDependencies: []))).execUs
        #expect(abs(learnedFresh - 900_000) < 90_000, "fresh after learning \(learnedFresh) µs")
    }

    /// The replaced model froze after ~5,000 updates on one profile (its covariance grew in the
    /// directions the data never moves: the warmth dummies' sum, the constant VM size).
    @Test func a100000ReplayedOutcomesKeepItLearningAndBounded() {
        let learned = LearnedPredictor()
        var random = TestRandom(seed: 6)
        for index in 0..<100_000 {
            let sample = outcome("work", ms: Double.random(in: 5...200, using: &random), cpu: Double.random(in: 0...1, using: &random),
                                 warmth: Double.random(in: 0...1, using: &random) < 0.05 ? .fresh : .warmForMethod)
            var shifted = sample
            // The last thousand run twice as slow: the host changed.
            if index >= 99_000 { shifted.execUs *= 2 }
            learned.observe(shifted)
        }
        #expect(learned.rejectedUpdates == 0)
        #expect(learned.methodStates()["work"]?.outcomes == 100_000)
        let truth = outcome("work", ms: 100, cpu: 0.5)
        let predicted = learned.predict(truth.features).execUs
        #expect(abs(predicted / (2 * truth.execUs) - 1) < 0.1, "predicted \(predicted) µs, truth now \(2 * truth.execUs) µs")
    }

    @Test func aHostThatJustTurnedSlowerMakesTheNextPredictionSlowerUntilTheHistoryIsReplayed() {
        let learned = LearnedPredictor()
        train([learned], freshShare: 0)
        let probe = outcome("work", ms: 100, cpu: 0.5)
        let steady = learned.predict(probe.features).execUs
        // A few invocations run at three times the usual: contention the features did not see.
        for index in 0..<6 {
            var slow = outcome("work", ms: Double(20 + index * 30), cpu: 0.5)
            slow.execUs *= 3
            learned.observe(slow)
        }
        let drifted = learned.predict(probe.features).execUs
        // Half of the drift, which is held to ±1 in log space: at most e^0.5 ≈ 1.65×.
        #expect(drifted > 1.3 * steady && drifted < 1.7 * steady, "steady \(steady) µs, after the slow ones \(drifted) µs")
        _ = HistoryReplay.replay([], into: learned)
        let replayed = learned.predict(probe.features).execUs
        #expect(replayed < drifted)
    }
}
