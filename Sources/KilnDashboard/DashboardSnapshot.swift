import Foundation
import KilnWire

/// What the page draws, as of one moment: the ``FleetWindow`` read out. Encoded as JSON with
/// snake_case keys (`/api/state`, and each `state` event of `/events`).
public struct DashboardSnapshot: Codable, Sendable, Equatable {
    public var nowUs: UInt64
    /// Seconds each chart spans.
    public var windowSeconds: Int
    /// Seconds each point of the rate and latency charts sums.
    public var bucketSeconds: Int
    public var feed: FeedStatus
    public var totals: FleetWindow.Totals
    public var workers: [WorkerView]
    public var pools: [PoolSeries]
    public var rates: [RateBucket]
    /// The latest invocations, newest first.
    public var invocations: [InvocationView]
    public var scatter: [MethodScatter]
    /// The latest VM and pool events, newest first.
    public var vmEvents: [VMEventView]

    /// The JSON the page reads.
    public func json() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return try [UInt8](encoder.encode(self))
    }

    /// The dashboard's link to the broker.
    public struct FeedStatus: Codable, Sendable, Equatable {
        public var connected = false
        /// Its queue is bound to `kiln.telemetry` (false until a worker has made the exchange).
        public var reading = false
        /// Times the feed has connected: more than one after the broker went away and came back.
        public var connections = 0
        /// Bodies on `kiln.telemetry` that were not telemetry events.
        public var undecodable = 0
        /// When the last event arrived (Unix µs).
        public var lastEventUs: UInt64?

        public init() {}
    }
}

/// One worker as its latest `host.sample` described it.
public struct WorkerView: Codable, Sendable, Equatable {
    public var worker: String
    public var host = ""
    public var backend = ""
    public var lastSeenUs: UInt64 = 0
    public var gone = false
    public var cpuUtil = 0.0
    public var memAvailableMb: UInt64 = 0
    public var memTotalMb: UInt64 = 0
    public var memPressure = 0.0
    public var netRxBps: UInt64 = 0
    public var netTxBps: UInt64 = 0
    public var vmsIdle: UInt32 = 0
    public var vmsBusy: UInt32 = 0
    public var pools: [PoolView] = []

    init(worker: String) {
        self.worker = worker
    }

    mutating func update(host: String, sample: TelemetryEvent.HostSample, pools: [PoolView], nowUs: UInt64) {
        self.host = host
        backend = Clip.name(sample.backend ?? "")
        lastSeenUs = nowUs
        cpuUtil = Clip.finite(sample.cpuUtil)
        memAvailableMb = sample.memAvailableMB
        memTotalMb = sample.memTotalMB ?? 0
        memPressure = Clip.finite(sample.memPressure)
        netRxBps = sample.netRxBps
        netTxBps = sample.netTxBps
        vmsIdle = sample.vmsIdle
        vmsBusy = sample.vmsBusy
        self.pools = pools
    }
}

/// A pool's counts in one sample.
public struct PoolView: Codable, Sendable, Equatable {
    public var profile: String
    public var idle: UInt32
    public var busy: UInt32
    public var target: UInt32
    public var waiting: UInt32

    public init(profile: String, idle: UInt32, busy: UInt32, target: UInt32, waiting: UInt32) {
        self.profile = profile
        self.idle = idle
        self.busy = busy
        self.target = target
        self.waiting = waiting
    }
}

/// A pool's counts at one moment; in JSON the array `[unix_milliseconds, idle, busy, target,
/// waiting]` (a window of a large fleet holds tens of thousands).
public struct PoolPoint: Codable, Sendable, Equatable {
    public var atMs: UInt64
    public var idle: UInt32
    public var busy: UInt32
    public var target: UInt32
    public var waiting: UInt32

    public init(atMs: UInt64, idle: UInt32, busy: UInt32, target: UInt32, waiting: UInt32) {
        self.atMs = atMs
        self.idle = idle
        self.busy = busy
        self.target = target
        self.waiting = waiting
    }

    public init(from decoder: any Decoder) throws {
        var values = try decoder.unkeyedContainer()
        self.init(atMs: try values.decode(UInt64.self), idle: try values.decode(UInt32.self), busy: try values.decode(UInt32.self),
                  target: try values.decode(UInt32.self), waiting: try values.decode(UInt32.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.unkeyedContainer()
        try values.encode(atMs)
        try values.encode(idle)
        try values.encode(busy)
        try values.encode(target)
        try values.encode(waiting)
    }
}

/// One worker's pool of one profile over the window, oldest first.
public struct PoolSeries: Codable, Sendable, Equatable {
    public var worker: String
    public var profile: String
    public var points: [PoolPoint]
}

/// Invocations in one bucket of the window, and their latency percentiles (total time in the
/// worker, ms; nil without invocations of that start).
public struct RateBucket: Codable, Sendable, Equatable {
    /// Unix second the bucket starts at.
    public var startS: UInt64
    public var ok = 0
    public var error = 0
    public var timeout = 0
    public var rejected = 0
    public var cold = 0
    public var warm = 0
    public var warmP50Ms: Double?
    public var warmP99Ms: Double?
    public var coldP50Ms: Double?
    public var coldP99Ms: Double?
}

/// One invocation and how it was placed.
public struct InvocationView: Codable, Sendable, Equatable {
    public var id: String
    public var method: String
    public var worker: String
    public var atUs: UInt64
    public var status: String
    public var vm: String?
    public var cold: Bool
    public var execUs: UInt64
    public var totalUs: UInt64
    public var provisionUs: UInt64?
    public var predictedUs: UInt64?
    public var model: String?
    public var candidates: [Candidate]

    /// A candidate VM, scored.
    public struct Candidate: Codable, Sendable, Equatable {
        public var place: String
        public var warmth: String
        public var predictedUs: UInt64
        public var uncertaintyUs: UInt64
        public var resourceFactor: Double?
        public var suitability: Double
        public var chosen: Bool
    }

    init(_ completed: TelemetryEvent.InvocationCompleted, method: String, worker: String, atUs: UInt64) {
        id = Clip.name(completed.id)
        self.method = method
        self.worker = worker
        self.atUs = atUs
        status = completed.status.rawValue
        vm = completed.vm.map(Clip.name)
        cold = completed.cold
        execUs = completed.execUs
        totalUs = completed.totalUs
        provisionUs = completed.provisionUs
        predictedUs = completed.predictedUs
        model = completed.placement.map { Clip.name($0.model) }
        // At most 16, the chosen one always among them.
        let all = completed.placement?.candidates ?? []
        let shown = all.count <= 16 ? all : Array(all.filter(\.chosen).prefix(1) + all.filter { !$0.chosen }.prefix(15))
        candidates = shown.map {
            Candidate(place: Clip.name($0.place), warmth: Clip.name($0.warmth), predictedUs: $0.predictedUs, uncertaintyUs: $0.uncertaintyUs,
                      resourceFactor: $0.resourceFactor.map(Clip.finite), suitability: Clip.finite($0.suitability), chosen: $0.chosen)
        }
    }
}

/// A predicted-against-measured point: the prediction covers provisioning and the run. In JSON
/// the array `[predicted_us, measured_us, cold (0 or 1)]`.
public struct ScatterPoint: Codable, Sendable, Equatable {
    public var predictedUs: UInt64
    public var measuredUs: UInt64
    public var cold: Bool

    public init(predictedUs: UInt64, measuredUs: UInt64, cold: Bool) {
        self.predictedUs = predictedUs
        self.measuredUs = measuredUs
        self.cold = cold
    }

    public init(from decoder: any Decoder) throws {
        var values = try decoder.unkeyedContainer()
        self.init(predictedUs: try values.decode(UInt64.self), measuredUs: try values.decode(UInt64.self), cold: try values.decode(UInt8.self) != 0)
    }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.unkeyedContainer()
        try values.encode(predictedUs)
        try values.encode(measuredUs)
        try values.encode(UInt8(cold ? 1 : 0))
    }
}

/// One method's points, oldest first.
public struct MethodScatter: Codable, Sendable, Equatable {
    public var method: String
    public var points: [ScatterPoint]
}

/// A VM created, destroyed or resized, or a pool's target changed.
public struct VMEventView: Codable, Sendable, Equatable {
    public var atUs: UInt64
    public var worker: String
    public var kind: String
    public var vm: String?
    public var profile: String?
    public var reason: String
    public var detail: String
}

extension FleetWindow {
    /// The window as of `nowUs`, with the feed's status; rates in buckets of `bucketSeconds`.
    public func snapshot(nowUs: UInt64, feed: DashboardSnapshot.FeedStatus, bucketSeconds: Int = 5) -> DashboardSnapshot {
        let bucket = max(1, bucketSeconds)
        var rates: [RateBucket] = []
        let slots = window(endingAt: nowUs)
        // Buckets end with the current second.
        for start in stride(from: slots.count % bucket, to: slots.count, by: bucket) {
            let part = slots[start..<min(start + bucket, slots.count)]
            var rate = RateBucket(startS: part.first!.epoch)
            var warm: [UInt64] = []
            var cold: [UInt64] = []
            for second in part {
                rate.ok += second.byStatus[.ok] ?? 0
                rate.error += second.byStatus[.error] ?? 0
                rate.timeout += second.byStatus[.timeout] ?? 0
                rate.rejected += second.byStatus[.rejected] ?? 0
                rate.cold += second.cold
                rate.warm += second.warm
                warm += second.warmLatenciesUs
                cold += second.coldLatenciesUs
            }
            (rate.warmP50Ms, rate.warmP99Ms) = Self.percentiles(warm)
            (rate.coldP50Ms, rate.coldP99Ms) = Self.percentiles(cold)
            rates.append(rate)
        }
        let workerViews = workers.values.map { state in
            var view = state.view
            view.gone = nowUs > view.lastSeenUs &+ limits.goneAfterUs
            return view
        }.sorted { ($0.host, $0.worker) < ($1.host, $1.worker) }
        let pools = workers.sorted { $0.key < $1.key }.flatMap { name, state in
            state.poolSeries.sorted { $0.key < $1.key }.map { PoolSeries(worker: name, profile: $0.key, points: $0.value.elements) }
        }
        return DashboardSnapshot(
            nowUs: nowUs, windowSeconds: seconds.count, bucketSeconds: bucket, feed: feed, totals: totals, workers: workerViews,
            pools: pools, rates: rates, invocations: invocations.elements.reversed(),
            scatter: scatter.sorted { $0.key < $1.key }.map { MethodScatter(method: $0.key, points: $0.value.points.elements) },
            vmEvents: vmEvents.elements.reversed())
    }

    /// p50 and p99 of `latenciesUs`, in milliseconds; nil without any.
    static func percentiles(_ latenciesUs: [UInt64]) -> (Double?, Double?) {
        guard !latenciesUs.isEmpty else { return (nil, nil) }
        let sorted = latenciesUs.sorted()
        func at(_ quantile: Double) -> Double {
            let index = min(sorted.count - 1, Int((quantile * Double(sorted.count)).rounded(.up)) - 1)
            return (Double(sorted[max(0, index)]) / 10).rounded() / 100
        }
        return (at(0.5), at(0.99))
    }
}
