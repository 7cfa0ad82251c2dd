import Foundation
import KilnPool
import KilnPredict
import KilnWorker
import Testing

@Suite("Suitability score")
struct SuitabilityScoreTests {
    let quiet = HostSample(cpuUtilization: 0.1, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                           memoryPressure: 0, networkReceiveBps: 0, networkTransmitBps: 0)

    func features(_ warmth: VMWarmth, method: String = "echo") -> PlacementFeatures {
        PlacementFeatures(method: method, profile: "small", backend: "qemu", warmth: warmth)
    }

    /// A candidate and the features the model is asked about.
    func option(
        _ kind: PlacementCandidate.Kind, _ warmth: VMWarmth, affinity: Bool = false
    ) -> (candidate: PlacementCandidate, features: PlacementFeatures) {
        (PlacementCandidate(kind: kind, profile: .small, affinityMatch: affinity), features(warmth))
    }

    /// A predictor with fixed figures.
    struct Fixed: LatencyPredictor {
        var exec: [VMWarmth: Double]
        var provision: Double
        var name: String { "fixed" }
        func predict(_ features: PlacementFeatures) -> LatencyPrediction {
            LatencyPrediction(provisionUs: features.warmth == .notProvisioned ? provision : 0,
                              execUs: exec[features.warmth] ?? 1_000, uncertaintyUs: 0)
        }
        func observe(_ outcome: ExecutionOutcome) {}
        func observeProvisioning(_ outcome: ProvisionOutcome) {}
    }

    @Test func aVMWarmForTheMethodBeatsAnotherIdleVMAndANewOne() throws {
        let predictor = Fixed(exec: [.warmForMethod: 300, .warm: 2_000, .fresh: 2_500, .notProvisioned: 2_500], provision: 45_000)
        let candidates = [option(.idle(vm: "a"), .warm), option(.idle(vm: "b"), .warmForMethod), option(.provision, .notProvisioned)]
        let decision = try #require(SuitabilityScorer(predictor: predictor).choose(from: candidates, host: quiet))
        #expect(decision.winner.candidate.kind == .idle(vm: "b"))
        #expect(decision.candidates.count == 3)
        #expect(decision.explanation.first?.hasPrefix("idle b (warm_method): predicted 300 µs") == true)
        #expect(decision.explanation.last?.hasPrefix("new small VM: predicted 47500 µs (+45000 µs provision") == true)
    }

    @Test func theExplanationWritesFiguresAsPrintfWould() throws {
        let predictor = Fixed(exec: [.warmForMethod: 333.5, .notProvisioned: 2_499.49], provision: 45_000.7)
        let busy = HostSample(cpuUtilization: 0.73, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                              memoryPressure: 0.004, networkReceiveBps: 0, networkTransmitBps: 0)
        let candidates = [option(.idle(vm: "b"), .warmForMethod, affinity: true), option(.provision, .notProvisioned)]
        let decision = try #require(SuitabilityScorer(predictor: predictor).choose(from: candidates, host: busy))
        let expected = decision.candidates.sorted { $0.suitability > $1.suitability }.map { scored in
            String(format: "%.0f µs (+%.0f µs provision, ±%.0f), resources x%.2f%@, suitability %.2f",
                   scored.prediction.totalUs, scored.prediction.provisionUs, scored.prediction.uncertaintyUs,
                   scored.resourceFactor, scored.candidate.affinityMatch ? ", affinity" : "", scored.suitability)
        }
        #expect(decision.explanation.map { String($0.split(separator: "predicted ", maxSplits: 1)[1]) } == expected)
    }

    /// Predicts 1 ms plus a microsecond per earlier use of the VM: near-equal VMs.
    struct ByReuse: LatencyPredictor {
        var name: String { "by-reuse" }
        func predict(_ features: PlacementFeatures) -> LatencyPrediction {
            LatencyPrediction(provisionUs: 0, execUs: 1_000 + Double(features.reuseCount), uncertaintyUs: 0)
        }
        func observe(_ outcome: ExecutionOutcome) {}
        func observeProvisioning(_ outcome: ProvisionOutcome) {}
    }

    @Test func nearTiesGoToTheEarliestCandidateTheMostRecentlyUsedVM() throws {
        func idle(_ vm: String, reuse: Int) -> (candidate: PlacementCandidate, features: PlacementFeatures) {
            (PlacementCandidate(kind: .idle(vm: vm), profile: .small, lastMethod: "echo", uses: reuse),
             PlacementFeatures(method: "echo", profile: "small", backend: "qemu", warmth: .warmForMethod, reuseCount: reuse))
        }
        // "hot" is listed first (the pool lists the most recently used first) and predicted 0.5%
        // slower than "cold": within the tolerance, so it wins.
        let scorer = SuitabilityScorer(predictor: ByReuse())
        let near = try #require(scorer.choose(from: [idle("hot", reuse: 5), idle("cold", reuse: 0)], host: quiet))
        #expect(near.winner.candidate.kind == .idle(vm: "hot"))
        // 10% slower is no tie.
        let far = try #require(scorer.choose(from: [idle("hot", reuse: 100), idle("cold", reuse: 0)], host: quiet))
        #expect(far.winner.candidate.kind == .idle(vm: "cold"))
    }

    @Test func affinityTipsTheBalanceBetweenEquals() throws {
        let predictor = Fixed(exec: [.warm: 1_000], provision: 45_000)
        let candidates = [option(.idle(vm: "a"), .warm), option(.idle(vm: "b"), .warm, affinity: true)]
        let decision = try #require(SuitabilityScorer(predictor: predictor).choose(from: candidates, host: quiet))
        #expect(decision.winner.candidate.kind == .idle(vm: "b"))
    }

    @Test func aLoadedHostMakesANewVMCostlier() {
        let scorer = SuitabilityScorer(predictor: EWMAPredictor())
        let (candidate, newVM) = option(.provision, .notProvisioned)
        let prediction = LatencyPrediction(provisionUs: 40_000, execUs: 1_000, uncertaintyUs: 2_000)
        var loaded = quiet
        loaded.cpuUtilization = 0.95
        loaded.memoryPressure = 0.3
        loaded.networkReceiveBps = 100_000_000
        let calm = scorer.score(candidate, features: newVM, prediction: prediction, host: quiet)
        let busy = scorer.score(candidate, features: newVM, prediction: prediction, host: loaded)
        #expect(calm.resourceFactor < busy.resourceFactor)
        #expect(calm.suitability > busy.suitability)
        // Uncertainty counts against a candidate: 41 ms + 0.5 × 2 ms.
        #expect(calm.effectiveLatencyUs == 42_000)
        // An idle VM's resources are already spent.
        let (idleVM, idleFeatures) = option(.idle(vm: "x"), .warm)
        let idle = scorer.score(idleVM, features: idleFeatures, prediction: prediction, host: loaded)
        #expect(idle.resourceFactor == 1)
    }

    @Test func noCandidatesNoDecision() {
        #expect(SuitabilityScorer(predictor: EWMAPredictor()).choose(from: [], host: quiet) == nil)
    }

    /// Predicts nothing useful: NaN for every VM that exists, infinity for a new one.
    struct Broken: LatencyPredictor {
        var name: String { "broken" }
        func predict(_ features: PlacementFeatures) -> LatencyPrediction {
            LatencyPrediction(provisionUs: features.warmth == .notProvisioned ? .infinity : 0, execUs: .nan, uncertaintyUs: .nan)
        }
        func observe(_ outcome: ExecutionOutcome) {}
        func observeProvisioning(_ outcome: ProvisionOutcome) {}
    }

    @Test func aModelThatPredictsNaNFallsBackToTheBaselineAndSaysSo() throws {
        let baseline = Fixed(exec: [.warmForMethod: 300, .warm: 2_000, .notProvisioned: 2_000], provision: 45_000)
        let scorer = SuitabilityScorer(predictor: Broken(), baseline: baseline)
        let decision = try #require(scorer.choose(
            from: [option(.idle(vm: "a"), .warm), option(.idle(vm: "b"), .warmForMethod), option(.provision, .notProvisioned)], host: quiet))
        #expect(decision.winner.candidate.kind == .idle(vm: "b"))
        #expect(decision.candidates.allSatisfy { $0.suitability.isFinite })
        #expect(decision.explanation.allSatisfy { $0.contains("(broken prediction not finite: fixed used)") })
        // With nothing finite at all, the first candidate is taken, and the explanation says so.
        let hopeless = try #require(SuitabilityScorer(predictor: Broken(), baseline: Broken()).choose(
            from: [option(.idle(vm: "a"), .warm), option(.provision, .notProvisioned)], host: quiet))
        #expect(hopeless.winnerIndex == 0)
        #expect(hopeless.explanation.contains { $0.contains("no finite suitability") })
    }
}
