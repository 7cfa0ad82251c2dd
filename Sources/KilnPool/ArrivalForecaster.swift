/// Forecasts when each method will be invoked again, to keep VMs warm just for then: the
/// hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., USENIX ATC'20), applied
/// to bursts.
///
/// Arrivals closer together than `burstGap` form one burst. Per method it keeps a histogram of
/// the idle times between bursts and the sizes of recent bursts. After a burst it expects the
/// next one no earlier than the idle times' `prewarmPercentile` (5th) and no later than their
/// `keepAlivePercentile` (99th): inside that window it asks for as many warm VMs as bursts
/// usually need; outside it, none. A method with too few idle times to trust falls back to a
/// fixed keep-alive after its last burst, as most platforms do.
public struct ArrivalForecaster: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Arrivals closer together than this are one burst.
        public var burstGap: Duration = .seconds(1)
        /// Width of an idle-time histogram bin.
        public var binWidth: Duration = .seconds(1)
        /// Idle times past this land in the last bin.
        public var range: Duration = .seconds(4 * 3_600)
        /// Idle-time percentile at which VMs are pre-warmed.
        public var prewarmPercentile = 0.05
        /// Idle-time percentile until which they are kept.
        public var keepAlivePercentile = 0.99
        /// Provisioning lead: VMs are pre-warmed this much before the window opens.
        public var lead: Duration = .seconds(2)
        /// Idle times needed before the histogram is trusted.
        public var minimumIdleTimes = 4
        /// Keep-alive for a method without a trusted histogram.
        public var fallbackKeepAlive: Duration = .seconds(600)
        /// Percentile of recent burst sizes to keep warm for.
        public var burstPercentile = 0.99
        /// Recent bursts whose sizes count.
        public var burstMemory = 32

        public init() {}
    }

    private struct MethodState {
        /// Idle-time histogram: bin → count (sparse: most bins stay empty).
        var idleTimes: [Int: Int] = [:]
        var idleCount = 0
        var bursts: [Int] = []
        var lastArrival: ContinuousClock.Instant
        var currentBurst = 1
    }

    public let settings: Settings
    private var methods: [String: MethodState] = [:]

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    private var binCount: Int { max(1, Int(settings.range / settings.binWidth)) }

    /// Records an invocation of `method` at `instant`.
    public mutating func recordArrival(_ method: String, at instant: ContinuousClock.Instant) {
        guard var state = methods[method] else {
            methods[method] = MethodState(lastArrival: instant)
            return
        }
        let gap = instant - state.lastArrival
        if gap < settings.burstGap {
            state.currentBurst += 1
        } else {
            state.bursts.append(state.currentBurst)
            if state.bursts.count > settings.burstMemory { state.bursts.removeFirst() }
            state.currentBurst = 1
            state.idleTimes[min(binCount - 1, Int(gap / settings.binWidth)), default: 0] += 1
            state.idleCount += 1
        }
        state.lastArrival = instant
        methods[method] = state
    }

    /// What the forecast is for one method at one instant, and why.
    public struct Forecast: Sendable, Equatable {
        public var warmVMs: Int
        public var reason: String
    }

    /// The warm VMs `method` should have at `instant`.
    public func forecast(_ method: String, at instant: ContinuousClock.Instant) -> Forecast {
        guard let state = methods[method] else { return Forecast(warmVMs: 0, reason: "never invoked") }
        let size = burstSize(state)
        let idle = instant - state.lastArrival
        if idle < settings.burstGap { return Forecast(warmVMs: size, reason: "in a burst") }
        guard state.idleCount >= settings.minimumIdleTimes else {
            let keep = idle < settings.fallbackKeepAlive
            return Forecast(warmVMs: keep ? size : 0, reason: keep ? "keep-alive (too few idle times to forecast)" : "keep-alive expired")
        }
        let opens = percentile(state, settings.prewarmPercentile) - settings.lead
        let closes = percentile(state, settings.keepAlivePercentile) + settings.binWidth
        if idle >= opens && idle <= closes {
            return Forecast(warmVMs: size, reason: "next burst expected between \(percentile(state, settings.prewarmPercentile)) and \(closes) after the last")
        }
        return Forecast(warmVMs: 0, reason: idle < opens ? "next burst not before \(opens + settings.lead)" : "past the expected window")
    }

    /// The warm VMs all of `methods` should have at `instant`, with the reasons of those that ask for any.
    public func forecast(methods names: some Sequence<String>, at instant: ContinuousClock.Instant) -> Forecast {
        var total = 0
        var reasons: [String] = []
        for name in names {
            let forecast = forecast(name, at: instant)
            guard forecast.warmVMs > 0 else { continue }
            total += forecast.warmVMs
            reasons.append("\(name) \(forecast.warmVMs): \(forecast.reason)")
        }
        return Forecast(warmVMs: total, reason: reasons.isEmpty ? "no burst expected" : reasons.joined(separator: "; "))
    }

    /// Methods seen so far.
    public var knownMethods: [String] { methods.keys.sorted() }

    private func burstSize(_ state: MethodState) -> Int {
        let sizes = (state.bursts + [state.currentBurst]).sorted()
        return sizes[min(sizes.count - 1, Int(Double(sizes.count - 1) * settings.burstPercentile + 0.5))]
    }

    /// The idle time at percentile `p` of the histogram (the start of its bin).
    private func percentile(_ state: MethodState, _ p: Double) -> Duration {
        let target = max(1, Int((Double(state.idleCount) * p).rounded(.up)))
        var seen = 0
        for bin in state.idleTimes.keys.sorted() {
            seen += state.idleTimes[bin]!
            if seen >= target { return settings.binWidth * bin }
        }
        return settings.range
    }
}
