/// Arrivals, cold starts and VM holding times of one profile over a sliding window: what the
/// pool sizer reads.
struct DemandTracker: Sendable {
    let window: Duration
    /// Arrival instants, oldest first, from `arrivalsStart` on (those before it have left the
    /// window): trimming moves the start instead of shifting the array on every arrival, and the
    /// array is compacted once half of it is stale.
    private var arrivals: [ContinuousClock.Instant] = []
    private var arrivalsStart = 0
    private var coldStarts: [ContinuousClock.Instant] = []
    /// Moving average of how long an invocation holds a VM, seconds (exec and reset).
    private(set) var holdSeconds: Double = 0
    private var holds = 0

    init(window: Duration) {
        self.window = window
    }

    mutating func recordArrival(at instant: ContinuousClock.Instant = .now) {
        arrivals.append(instant)
        trim(now: instant)
    }

    mutating func recordColdStart(at instant: ContinuousClock.Instant = .now) {
        coldStarts.append(instant)
    }

    mutating func recordHold(_ duration: Duration) {
        let seconds = duration.inSeconds
        holds += 1
        holdSeconds = holds == 1 ? seconds : holdSeconds + 0.1 * (seconds - holdSeconds)
    }

    private mutating func trim(now: ContinuousClock.Instant) {
        let horizon = now - window
        while arrivalsStart < arrivals.count, arrivals[arrivalsStart] < horizon { arrivalsStart += 1 }
        if arrivalsStart > 64, arrivalsStart * 2 > arrivals.count {
            arrivals.removeFirst(arrivalsStart)
            arrivalsStart = 0
        }
        if let first = coldStarts.first, first < horizon { coldStarts.removeAll { $0 < horizon } }
    }

    /// Demand over the window ending `now`.
    mutating func snapshot(now: ContinuousClock.Instant = .now) -> DemandSnapshot {
        trim(now: now)
        let seconds = window.inSeconds
        return DemandSnapshot(
            arrivalRate: Double(arrivals.count - arrivalsStart) / seconds, serviceTime: holdSeconds, coldStarts: coldStarts.count,
            window: seconds)
    }
}
