import KilnWire

/// What the dashboard remembers of a fleet's telemetry: a bounded window in memory, fed one
/// event at a time and read as a ``DashboardSnapshot``.
///
/// Every part has a fixed bound, so that a busy fleet or a hostile publisher cannot grow it:
/// - per second over the last ``Limits/seconds``: invocations by status, cold and warm, and up to
///   ``Limits/latenciesPerSecond`` latencies of each start for the percentiles;
/// - the latest ``Limits/invocations`` invocations with their placements;
/// - the latest ``Limits/pointsPerMethod`` predicted-against-measured points of at most
///   ``Limits/methods`` methods (the least recently seen method goes first);
/// - at most ``Limits/workers`` workers (one silent for ``Limits/forgetWorkerAfterUs`` is
///   forgotten) and, per pool, its last ``Limits/seconds`` samples;
/// - the latest ``Limits/vmEvents`` VM and pool events.
///
/// Times are the dashboard's own clock when an event arrived (`nowUs`), not the worker's: a
/// worker with a skewed clock still lands in the right second.
public struct FleetWindow: Sendable {
    /// The bounds of the window.
    public struct Limits: Sendable {
        public var seconds = 300
        public var latenciesPerSecond = 512
        public var invocations = 50
        public var methods = 32
        public var pointsPerMethod = 200
        public var workers = 256
        public var vmEvents = 100
        /// A worker silent this long is shown as gone.
        public var goneAfterUs: UInt64 = 5_000_000
        /// A worker silent this long is forgotten.
        public var forgetWorkerAfterUs: UInt64 = 600_000_000

        public init() {}
    }

    public let limits: Limits
    private(set) var seconds: [Second]
    private(set) var invocations = Ring<InvocationView>(capacity: 1)
    private(set) var scatter: [String: MethodPoints] = [:]
    private(set) var workers: [String: WorkerState] = [:]
    private(set) var vmEvents = Ring<VMEventView>(capacity: 1)
    private(set) var totals = Totals()

    public init(limits: Limits = Limits()) {
        self.limits = limits
        seconds = Array(repeating: Second(), count: max(1, limits.seconds))
        invocations = Ring(capacity: limits.invocations)
        vmEvents = Ring(capacity: limits.vmEvents)
    }

    /// The counts of one second.
    struct Second: Sendable {
        /// Unix second this slot holds (slots are reused around the ring).
        var epoch: UInt64 = 0
        var byStatus: [InvocationResult.Status: Int] = [:]
        var cold = 0
        var warm = 0
        var warmLatenciesUs: [UInt64] = []
        var coldLatenciesUs: [UInt64] = []
    }

    /// A method's recent points.
    struct MethodPoints: Sendable {
        var points: Ring<ScatterPoint>
        var lastSeenUs: UInt64
    }

    /// What the latest `host.sample` of a worker said, and its pools over time.
    struct WorkerState: Sendable {
        var view: WorkerView
        var poolSeries: [String: Ring<PoolPoint>]
    }

    /// Counts since the dashboard started.
    public struct Totals: Sendable, Codable, Equatable {
        public var events = 0
        public var vmsCreated = 0
        public var vmsDestroyed = 0
    }

    // MARK: Ingesting

    /// Takes one event, received at `nowUs` (Unix microseconds).
    public mutating func ingest(_ event: TelemetryEvent, nowUs: UInt64) {
        totals.events += 1
        let worker = Clip.name(event.worker)
        switch event.payload {
        case .invocationCompleted(let completed):
            record(completed, worker: worker, nowUs: nowUs)
        case .hostSample(let sample):
            record(sample, worker: worker, host: Clip.name(event.host), nowUs: nowUs)
        case .vmCreated(let created):
            totals.vmsCreated += 1
            vmEvents.append(VMEventView(
                atUs: nowUs, worker: worker, kind: "created", vm: Clip.name(created.vm), profile: Clip.name(created.profile),
                reason: Clip.text(created.reason ?? ""),
                detail: "\(Clip.name(created.mode ?? "boot")) in \(Format.milliseconds(created.bootUs)) ms"))
        case .vmDestroyed(let destroyed):
            totals.vmsDestroyed += 1
            vmEvents.append(VMEventView(
                atUs: nowUs, worker: worker, kind: "destroyed", vm: Clip.name(destroyed.vm), profile: nil, reason: Clip.text(destroyed.reason),
                detail: "after \(destroyed.uses) uses, \(Format.seconds(destroyed.lifetimeUs)) s"))
        case .vmReallocated(let reallocated):
            vmEvents.append(VMEventView(
                atUs: nowUs, worker: worker, kind: "reallocated", vm: Clip.name(reallocated.vm), profile: nil,
                reason: Clip.text(reallocated.reason),
                detail: "\(Format.allocation(reallocated.from)) → \(Format.allocation(reallocated.to))"))
        case .poolResized(let resized):
            vmEvents.append(VMEventView(
                atUs: nowUs, worker: worker, kind: "pool resized", vm: nil, profile: Clip.name(resized.profile),
                reason: Clip.text(resized.reason), detail: "target \(resized.from) → \(resized.to)"))
        case .unknown:
            break
        }
    }

    private mutating func record(_ completed: TelemetryEvent.InvocationCompleted, worker: String, nowUs: UInt64) {
        let index = slot(for: nowUs)
        seconds[index].byStatus[completed.status, default: 0] += 1
        if completed.cold {
            seconds[index].cold += 1
            if seconds[index].coldLatenciesUs.count < limits.latenciesPerSecond { seconds[index].coldLatenciesUs.append(completed.totalUs) }
        } else {
            seconds[index].warm += 1
            if seconds[index].warmLatenciesUs.count < limits.latenciesPerSecond { seconds[index].warmLatenciesUs.append(completed.totalUs) }
        }
        let method = Clip.name(completed.method)
        invocations.append(InvocationView(completed, method: method, worker: worker, atUs: nowUs))
        // Predicted against measured: the prediction covers provisioning and the run in the VM.
        if let predicted = completed.predictedUs, completed.status == .ok {
            let measured = completed.execUs &+ (completed.provisionUs ?? 0)
            if scatter[method] == nil {
                if scatter.count >= limits.methods, let stalest = scatter.min(by: { $0.value.lastSeenUs < $1.value.lastSeenUs })?.key {
                    scatter[stalest] = nil
                }
                scatter[method] = MethodPoints(points: Ring(capacity: limits.pointsPerMethod), lastSeenUs: nowUs)
            }
            scatter[method]!.points.append(ScatterPoint(predictedUs: predicted, measuredUs: measured, cold: completed.cold))
            scatter[method]!.lastSeenUs = nowUs
        }
    }

    private mutating func record(_ sample: TelemetryEvent.HostSample, worker: String, host: String, nowUs: UInt64) {
        forgetSilentWorkers(nowUs: nowUs)
        if workers[worker] == nil, workers.count >= limits.workers,
           let stalest = workers.min(by: { $0.value.view.lastSeenUs < $1.value.view.lastSeenUs })?.key {
            workers[stalest] = nil
        }
        let pools = (sample.pools ?? []).prefix(32).map {
            PoolView(profile: Clip.name($0.profile), idle: $0.idle, busy: $0.busy, target: $0.target, waiting: $0.waiting ?? 0)
        }
        var state = workers[worker] ?? WorkerState(view: WorkerView(worker: worker), poolSeries: [:])
        state.view.update(host: host, sample: sample, pools: pools, nowUs: nowUs)
        for pool in pools {
            if state.poolSeries[pool.profile] == nil {
                guard state.poolSeries.count < 32 else { continue }
                state.poolSeries[pool.profile] = Ring(capacity: limits.seconds)
            }
            state.poolSeries[pool.profile]!.append(PoolPoint(atMs: nowUs / 1_000, idle: pool.idle, busy: pool.busy, target: pool.target, waiting: pool.waiting))
        }
        workers[worker] = state
    }

    private mutating func forgetSilentWorkers(nowUs: UInt64) {
        for (name, state) in workers where nowUs > state.view.lastSeenUs &+ limits.forgetWorkerAfterUs {
            workers[name] = nil
        }
    }

    /// The slot of the second holding `nowUs`, emptied first when it held an older second.
    private mutating func slot(for nowUs: UInt64) -> Int {
        let epoch = nowUs / 1_000_000
        let index = Int(epoch % UInt64(seconds.count))
        if seconds[index].epoch != epoch { seconds[index] = Second(epoch: epoch) }
        return index
    }

    /// The second slots of the window ending at `nowUs`, oldest first (empty ones for seconds
    /// nothing arrived in).
    func window(endingAt nowUs: UInt64) -> [Second] {
        let newest = nowUs / 1_000_000
        return (0..<UInt64(seconds.count)).reversed().map { back in
            guard newest >= back else { return Second() }
            let epoch = newest - back
            let slot = seconds[Int(epoch % UInt64(seconds.count))]
            return slot.epoch == epoch ? slot : Second(epoch: epoch)
        }
    }
}

/// A fixed-capacity ring: appending past the capacity drops the oldest.
struct Ring<Element: Sendable>: Sendable {
    let capacity: Int
    private var storage: [Element] = []
    private var next = 0

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        storage.reserveCapacity(min(self.capacity, 1_024))
    }

    mutating func append(_ element: Element) {
        if storage.count < capacity {
            storage.append(element)
        } else {
            storage[next] = element
        }
        next = (next + 1) % capacity
    }

    /// Oldest first.
    var elements: [Element] {
        storage.count < capacity ? storage : Array(storage[next...] + storage[..<next])
    }
}

/// Cuts what a publisher sent to a size a page can show, in bytes: a character may hold any
/// number of combining marks, so counting characters bounds nothing.
enum Clip {
    /// A name (method, worker, VM, profile): at most 128 bytes of UTF-8.
    static func name(_ text: String) -> String { cut(text, bytes: 128) }
    /// A reason or a message: at most 512 bytes of UTF-8.
    static func text(_ text: String) -> String { cut(text, bytes: 512) }

    /// `text` in at most `bytes` bytes of UTF-8, cut between scalars and ended with "…" when cut.
    static func cut(_ text: String, bytes: Int) -> String {
        guard text.utf8.count > bytes else { return text }
        let room = bytes - "…".utf8.count
        var kept = String.UnicodeScalarView()
        var used = 0
        for scalar in text.unicodeScalars {
            let size = UTF8.width(scalar)
            guard used + size <= room else { break }
            kept.append(scalar)
            used += size
        }
        return String(kept) + "…"
    }
    /// A finite number (JSON has no NaN), else 0.
    static func finite(_ value: Double) -> Double { value.isFinite ? value : 0 }
}

/// Numbers as the page's lines show them.
enum Format {
    static func milliseconds(_ us: UInt64) -> String { String(describing: (Double(us) / 100).rounded() / 10) }
    static func seconds(_ us: UInt64) -> String { String(describing: (Double(us) / 100_000).rounded() / 10) }
    static func allocation(_ allocation: TelemetryEvent.Allocation) -> String {
        var parts: [String] = []
        if let vcpus = allocation.vcpus { parts.append("\(vcpus) vCPU") }
        if let memory = allocation.memoryMB { parts.append("\(memory) MiB") }
        if let quota = allocation.cpuQuotaPercent { parts.append("\(quota)% CPU") }
        return parts.isEmpty ? "unchanged" : parts.joined(separator: ", ")
    }
}
