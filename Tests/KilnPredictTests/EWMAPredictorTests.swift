import KilnPredict
import Testing

@Suite("EWMA predictor")
struct EWMAPredictorTests {
    func features(_ method: String, _ warmth: VMWarmth) -> PlacementFeatures {
        PlacementFeatures(method: method, profile: "small", backend: "qemu", warmth: warmth)
    }

    @Test func movingEstimateFollowsASteadySignalAndMeasuresSpread() {
        var estimate = MovingEstimate(alpha: 0.2)
        for _ in 0..<100 { estimate.add(1_000) }
        #expect(abs(estimate.mean - 1_000) < 0.001)
        #expect(estimate.standardDeviation < 0.001)
        for value in [900.0, 1_100, 900, 1_100, 900, 1_100] { estimate.add(value) }
        #expect(estimate.standardDeviation > 50)
        #expect(estimate.samples == 106)
    }

    @Test func unseenMethodsUseTheDefaultsAndAColdVMAddsProvisioning() {
        let predictor = EWMAPredictor(defaults: .init(execUs: 7_000, provisionUs: 40_000))
        let warm = predictor.predict(features("new", .warm))
        #expect(warm.execUs == 7_000)
        #expect(warm.provisionUs == 0)
        let cold = predictor.predict(features("new", .notProvisioned))
        #expect(cold.totalUs == 47_000)
    }

    @Test func learnsPerMethodAndWarmthAndPerBackendProvisioning() {
        let predictor = EWMAPredictor(alpha: 0.5)
        for _ in 0..<20 {
            predictor.observe(ExecutionOutcome(features: features("echo", .warmForMethod), provisionUs: 0, execUs: 200, succeeded: true))
            predictor.observe(ExecutionOutcome(features: features("echo", .fresh), provisionUs: 0, execUs: 2_000, succeeded: true))
            predictor.observeProvisioning(ProvisionOutcome(backend: "qemu", profile: "small", durationUs: 45_000))
        }
        #expect(abs(predictor.predict(features("echo", .warmForMethod)).execUs - 200) < 1)
        #expect(abs(predictor.predict(features("echo", .fresh)).execUs - 2_000) < 1)
        let cold = predictor.predict(features("echo", .notProvisioned))
        #expect(abs(cold.provisionUs - 45_000) < 1)
        // Another method's figures stand in for a method never seen, rather than the defaults.
        #expect(predictor.predict(features("other", .warm)).execUs < 5_000)
        // A timeout says nothing about the usual latency.
        predictor.observe(ExecutionOutcome(features: features("echo", .warmForMethod), provisionUs: 0, execUs: 9e6, succeeded: false))
        #expect(predictor.predict(features("echo", .warmForMethod)).execUs < 1_000)
    }

    /// The demo's third wave predicted a warm `sleep` from its one run on a fresh VM: 12× too slow.
    @Test func aMethodSeenOnlyOnFreshVMsIsPredictedWarmByHowMuchFasterOthersRanWarm() {
        let predictor = EWMAPredictor()
        // echo: 500 ms on a fresh VM, 100 ms warm; sleep: 600 ms once, on a fresh VM.
        for warmth in [VMWarmth.fresh, .warmForMethod, .warmForMethod] {
            predictor.observe(ExecutionOutcome(features: features("echo", warmth), provisionUs: 0, execUs: warmth == .fresh ? 500_000 : 100_000, succeeded: true))
        }
        predictor.observe(ExecutionOutcome(features: features("sleep", .fresh), provisionUs: 0, execUs: 600_000, succeeded: true))
        let warm = predictor.predict(features("sleep", .warmForMethod)).execUs
        #expect(abs(warm - 120_000) < 1, "warm sleep predicted \(warm) µs")
        // And the other way: a method only seen warm is predicted slower on a fresh VM.
        predictor.observe(ExecutionOutcome(features: features("hash", .warmForMethod), provisionUs: 0, execUs: 10_000, succeeded: true))
        #expect(abs(predictor.predict(features("hash", .fresh)).execUs - 50_000) < 1)
    }
}
