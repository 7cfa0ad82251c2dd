@testable import KilnPool
import Testing

@Suite("Demand tracking")
struct DemandTrackerTests {
    @Test func theRateCountsOnlyArrivalsInsideTheWindow() {
        var tracker = DemandTracker(window: .seconds(5))
        let start = ContinuousClock.now
        // 20 s of arrivals at 500/s: only the last 5 s count.
        for index in 0..<10_000 { tracker.recordArrival(at: start + .milliseconds(index * 2)) }
        let rate = tracker.snapshot(now: start + .milliseconds(20_000)).arrivalRate
        #expect(abs(rate - 500) <= 1, "rate \(rate)")
        // Nothing arrives for a while: the window empties.
        #expect(tracker.snapshot(now: start + .seconds(30)).arrivalRate == 0)
        tracker.recordArrival(at: start + .seconds(31))
        #expect(tracker.snapshot(now: start + .seconds(31)).arrivalRate == 0.2)
    }

    @Test func coldStartsLeaveTheWindowToo() {
        var tracker = DemandTracker(window: .seconds(10))
        let start = ContinuousClock.now
        tracker.recordColdStart(at: start)
        tracker.recordColdStart(at: start + .seconds(8))
        #expect(tracker.snapshot(now: start + .seconds(9)).coldStarts == 2)
        #expect(tracker.snapshot(now: start + .seconds(12)).coldStarts == 1)
    }
}
