/// Arrivals, cold starts and VM holding times of one profile over a sliding window: what the
/// pool sizer reads.
struct DemandTracker: Sendable {
    let window: Duration
    private var arrivals: [ContinuousClock.Instant] = []
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
        if let first = arrivals.firstIndex(where: { $0 >= horizon }) {
            if first > 0 { arrivals.removeFirst(first) }
        } else {
            arrivals.removeAll()
        }
        coldStarts.removeAll { $0 < horizon }
    }

    /// Demand over the window ending `now`.
    mutating func snapshot(now: ContinuousClock.Instant = .now) -> DemandSnapshot {
        trim(now: now)
        let seconds = window.inSeconds
        return DemandSnapshot(
            arrivalRate: Double(arrivals.count) / seconds, serviceTime: holdSeconds, coldStarts: coldStarts.count,
            window: seconds)
    }
}
