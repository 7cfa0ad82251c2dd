import KilnPool
import Testing

@Suite("Arrival forecast")
struct ArrivalForecasterTests {
    let start = ContinuousClock.now

    /// Bursts of `size` arrivals every `period` seconds (± `jitter`), `count` of them.
    func feed(_ forecaster: inout ArrivalForecaster, method: String, period: Double, jitter: [Double], size: Int, count: Int) -> ContinuousClock.Instant {
        var time = start
        for index in 0..<count {
            for member in 0..<size { forecaster.recordArrival(method, at: time + .milliseconds(member * 50)) }
            time = time + .milliseconds(Int64((period + jitter[index % jitter.count]) * 1_000))
        }
        return time - .milliseconds(Int64((period + jitter[(count - 1) % jitter.count]) * 1_000))
    }

    @Test func keepsVMsWarmOnlyAroundTheNextExpectedBurst() {
        var forecaster = ArrivalForecaster()
        let last = feed(&forecaster, method: "report", period: 300, jitter: [-20, 0, 20, 10, -10], size: 12, count: 20)
        // Right after a burst, and long before the next: nothing.
        #expect(forecaster.forecast("report", at: last + .seconds(60)).warmVMs == 0)
        #expect(forecaster.forecast("report", at: last + .seconds(60)).reason.hasPrefix("next burst not before"))
        // Shortly before the earliest expected arrival (280 s): a burst's worth.
        #expect(forecaster.forecast("report", at: last + .seconds(279)).warmVMs == 12)
        #expect(forecaster.forecast("report", at: last + .seconds(315)).warmVMs == 12)
        // After the latest seen, the window closes.
        #expect(forecaster.forecast("report", at: last + .seconds(400)).warmVMs == 0)
    }

    @Test func aMethodWithoutEnoughHistoryGetsAFixedKeepAlive() {
        var forecaster = ArrivalForecaster()
        forecaster.recordArrival("rare", at: start)
        forecaster.recordArrival("rare", at: start + .milliseconds(100))
        #expect(forecaster.forecast("rare", at: start + .seconds(5)).warmVMs == 2)
        #expect(forecaster.forecast("rare", at: start + .seconds(5)).reason.contains("keep-alive"))
        #expect(forecaster.forecast("rare", at: start + .seconds(700)).warmVMs == 0)
        #expect(forecaster.forecast("never", at: start).warmVMs == 0)
    }

    @Test func methodsOfAProfileAddUp() {
        var forecaster = ArrivalForecaster()
        let a = feed(&forecaster, method: "a", period: 60, jitter: [0], size: 3, count: 10)
        _ = feed(&forecaster, method: "b", period: 60, jitter: [0], size: 2, count: 10)
        let total = forecaster.forecast(methods: ["a", "b"], at: a + .seconds(59))
        #expect(total.warmVMs == 5)
        #expect(total.reason.contains("a 3"))
        #expect(total.reason.contains("b 2"))
    }
}
