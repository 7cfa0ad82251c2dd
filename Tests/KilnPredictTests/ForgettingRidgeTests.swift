import Foundation
import KilnPredict
import Testing

/// SplitMix64: seeded, so that a test draws the same numbers on every run.
struct TestRandom: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Forgetting ridge regression")
struct ForgettingRidgeTests {
    @Test func recoversALinearFunction() {
        var model = ForgettingRidge(dimension: 2, forgetting: 1, ridge: 1e-6)
        var random = TestRandom(seed: 1)
        for _ in 0..<200 {
            let x = Double.random(in: 0...10, using: &random)
            let z = Double.random(in: -5...5, using: &random)
            let learned = model.add([x, z], target: 3 + 2 * x - 0.5 * z)
            #expect(learned)
        }
        #expect(abs(model.fit.intercept - 3) < 1e-3)
        #expect(abs(model.fit.coefficients[0] - 2) < 1e-3)
        #expect(abs(model.fit.coefficients[1] + 0.5) < 1e-3)
        #expect(abs(model.predict([4, 2]) - 10) < 1e-3)
    }

    @Test func leavesOutConstantAndCollinearColumns() {
        // Columns: x, a constant, x's copy scaled, and two dummies that always sum to one.
        var model = ForgettingRidge(dimension: 5, forgetting: 1, ridge: 1e-6)
        var random = TestRandom(seed: 2)
        for _ in 0..<300 {
            let x = Double.random(in: 0...4, using: &random)
            let warm = Bool.random(using: &random)
            let learned = model.add([x, 7, 2 * x, warm ? 1 : 0, warm ? 0 : 1], target: 1 + x + (warm ? 0 : 0.5))
            #expect(learned)
        }
        #expect(model.fit.active == [true, false, false, true, false])
        #expect(abs(model.predict([2, 7, 4, 1, 0]) - 3) < 1e-3)
        #expect(abs(model.predict([2, 7, 4, 0, 1]) - 3.5) < 1e-3)
    }

    @Test func refusesWhatIsNotFiniteAndKeepsItsFit() {
        var model = ForgettingRidge(dimension: 2)
        for index in 0..<50 { model.add([Double(index % 7), Double(index % 3)], target: Double(index % 7)) }
        let before = model
        let notANumber = model.add([.nan, 1], target: 1)
        let infinite = model.add([1, 1], target: .infinity)
        // Finite, but its products overflow: the fit it would give is not finite.
        let overflowing = model.add([1e200, 1], target: 1)
        #expect(!notANumber && !infinite && !overflowing)
        #expect(model == before)
    }

    @Test func clipsToTheTrainingRangeAndSaysHowFarOutside() {
        var model = ForgettingRidge(dimension: 1, forgetting: 1)
        for index in 0..<20 { model.add([Double(10 + index % 11)], target: Double(index % 11)) }
        #expect(model.clip([15]).outside == 0)
        let (clipped, outside) = model.clip([40])
        #expect(clipped == [20])
        #expect(abs(outside - 2) < 1e-9)  // 20 past the top of a range 10 wide
    }

    /// The failure of the model this replaced: its covariance grew without bound in the
    /// directions the data never moves, until every update was refused and the weights froze.
    @Test func a100000UpdatesKeepLearningAndStayBounded() {
        var model = ForgettingRidge(dimension: 6, forgetting: 0.995)
        var random = TestRandom(seed: 3)
        var refused = 0
        for index in 0..<100_000 {
            let x = Double.random(in: 0...3, using: &random)
            let warm = Double.random(in: 0...1, using: &random) < 0.9
            let shift = index >= 99_000 ? 1.0 : 0.0
            let noise = Double.random(in: -0.1...0.1, using: &random)
            // Two dummies summing to one, a constant, a near-constant column of tiny variance.
            let columns = [x, warm ? 1 : 0, warm ? 0 : 1, 1, 1e-9 * Double(index % 2), Double.random(in: 0...1, using: &random)]
            if !model.add(columns, target: 2 + 0.5 * x + (warm ? 0 : 1) + shift + noise) { refused += 1 }
        }
        #expect(refused == 0)
        #expect(model.samples == 100_000)
        // It followed the shift of the last thousand samples.
        let prediction = model.predict([2, 1, 0, 1, 0, 0.5])
        #expect(abs(prediction - 4) < 0.1, "predicted \(prediction), expected 4")
        #expect(model.fit.coefficients.allSatisfy { $0.isFinite && abs($0) < 10 }, "\(model.fit.coefficients)")
    }
}
