import KilnPool
import KilnPredict
import KilnVM
import KilnWire
import Metrics

/// The worker's metrics through swift-metrics (the executable picks the backend: Prometheus),
/// and the pool observer that turns pool decisions into telemetry events and metrics.
public struct WorkerMetrics: Sendable {
    let telemetry: TelemetrySink

    public init(telemetry: TelemetrySink) {
        self.telemetry = telemetry
    }

    /// The `method` label of invocations of methods the manifest does not have (not a valid
    /// method name, so it cannot collide with one).
    static let unknownMethod = "(unknown)"

    /// An invocation's result was published.
    func invocationCompleted(method: String, status: InvocationResult.Status, execUs: UInt64, totalUs: UInt64, overheadUs: UInt64, cold: Bool) {
        Counter(label: KilnMetric.invocationsTotal.rawValue, dimensions: [("method", method), ("status", status.rawValue)]).increment()
        Timer(label: KilnMetric.execSeconds.rawValue, dimensions: [("method", method)], preferredDisplayUnit: .seconds)
            .recordMicroseconds(execUs)
        Timer(label: KilnMetric.totalSeconds.rawValue, dimensions: [("method", method), ("start", cold ? "cold" : "warm")], preferredDisplayUnit: .seconds)
            .recordMicroseconds(totalUs)
        Timer(label: KilnMetric.overheadSeconds.rawValue, preferredDisplayUnit: .seconds).recordMicroseconds(overheadUs)
    }

    /// CPU time a method's invocation used, for pay-per-use: in its VM (the agent's count) and
    /// on the host (the VM's cgroup).
    func methodUsage(method: String, _ usage: InvocationResult.Usage) {
        for (metric, microseconds) in [(KilnMetric.methodCpuSecondsTotal, usage.cpuUs), (.methodHostCpuSecondsTotal, usage.hostCPUUs)] {
            guard let microseconds else { continue }
            FloatingPointCounter(label: metric.rawValue, dimensions: [("method", method)]).increment(by: Double(microseconds) / 1_000_000)
        }
    }

    /// The latency model's error for `method` after its latest run (see ``PredictionError``).
    func modelError(method: String, ratio: Double) {
        Gauge(label: KilnMetric.modelErrorRatio.rawValue, dimensions: [("method", method)]).record(ratio)
    }

    /// A batch of `calls` invocations went to one VM in one frame.
    func batchSent(calls: Int) {
        Counter(label: KilnMetric.batchesTotal.rawValue).increment()
        Counter(label: KilnMetric.batchedInvocationsTotal.rawValue).increment(by: calls)
    }

    /// Makes the model's counters exist from the start, at zero, so that a dashboard sees them
    /// before the first refusal.
    static func registerModelMetrics() {
        for reason in LearnedPredictor.Rejection.allCases {
            Counter(label: KilnMetric.modelRejectedUpdatesTotal.rawValue, dimensions: [("reason", reason.rawValue)]).increment(by: 0)
        }
    }

    /// The latency model refused an update (see ``LearnedPredictor/Rejection``).
    static func modelRejectedUpdate(_ reason: LearnedPredictor.Rejection) {
        Counter(label: KilnMetric.modelRejectedUpdatesTotal.rawValue, dimensions: [("reason", reason.rawValue)]).increment()
    }

    /// A body was dead-lettered, for `reason` (the error's kind).
    func deadLettered(reason: String) {
        Counter(label: KilnMetric.deadLettersTotal.rawValue, dimensions: [("reason", reason)]).increment()
    }

    /// `kiln_worker_info{host, worker, backend} 1`: which host and worker a scrape came from,
    /// for joining a fleet's series on (the Prometheus "info" metric pattern).
    static func registerWorkerInfo(host: String, worker: String, backend: String) {
        Gauge(label: KilnMetric.workerInfo.rawValue, dimensions: [("host", host), ("worker", worker), ("backend", backend)]).record(1)
    }

    /// A host sample: gauges, and a `host.sample` event with the backend and each pool's counts.
    func hostSampled(_ sample: HostSample, backend: String, pools: [PoolStatus]) {
        let idle = pools.reduce(0) { $0 + $1.idle }
        let busy = pools.reduce(0) { $0 + $1.busy + $1.resetting }
        Gauge(label: KilnMetric.hostCpuUtilization.rawValue).record(sample.cpuUtilization)
        Gauge(label: KilnMetric.hostMemoryAvailableBytes.rawValue).record(Double(sample.memoryAvailableMB) * 1_048_576)
        Gauge(label: KilnMetric.hostMemoryPressure.rawValue).record(sample.memoryPressure)
        Gauge(label: KilnMetric.hostCpuPressure.rawValue).record(sample.cpuPressure)
        Gauge(label: KilnMetric.hostNetworkReceiveBytesPerSecond.rawValue).record(Double(sample.networkReceiveBps))
        Gauge(label: KilnMetric.hostNetworkTransmitBytesPerSecond.rawValue).record(Double(sample.networkTransmitBps))
        for pool in pools {
            Gauge(label: KilnMetric.poolWaitingInvocations.rawValue, dimensions: [("profile", pool.profile)]).record(pool.waiting)
        }
        telemetry.emit(.hostSample(.init(
            cpuUtil: sample.cpuUtilization, memAvailableMB: UInt64(max(0, sample.memoryAvailableMB)), memPressure: sample.memoryPressure,
            netRxBps: sample.networkReceiveBps, netTxBps: sample.networkTransmitBps, vmsIdle: UInt32(clamping: idle), vmsBusy: UInt32(clamping: busy),
            backend: backend, pools: pools.map {
                .init(profile: $0.profile, idle: UInt32(clamping: $0.idle), busy: UInt32(clamping: $0.busy + $0.resetting + $0.provisioning),
                      target: UInt32(clamping: $0.targetIdle), waiting: UInt32(clamping: $0.waiting))
            }, memTotalMB: UInt64(max(0, sample.memoryTotalMB)))))
    }
}

extension WorkerMetrics: PoolObserver {
    public func vmCreated(_ vm: CreatedVM) {
        let provisioning = vm.provisioning
        Timer(label: KilnMetric.vmCreateSeconds.rawValue, dimensions: [("backend", vm.backend), ("profile", vm.profile.name), ("mode", provisioning.method.rawValue)],
              preferredDisplayUnit: .seconds)
            .recordNanoseconds(Int64(provisioning.duration.inMicroseconds) * 1_000)
        telemetry.emit(.vmCreated(.init(
            vm: vm.id, backend: vm.backend, profile: vm.profile.name, bootUs: provisioning.duration.inMicroseconds,
            mode: provisioning.method.rawValue, reason: vm.reason)))
    }

    public func vmDestroyed(id: String, backend: String, profile: String, reason: String, lifetime: Duration, uses: Int, took: Duration) {
        Timer(label: KilnMetric.vmDestroySeconds.rawValue, dimensions: [("backend", backend), ("profile", profile)], preferredDisplayUnit: .seconds)
            .recordNanoseconds(Int64(took.inMicroseconds) * 1_000)
        Counter(label: KilnMetric.vmDestroyedTotal.rawValue, dimensions: [("profile", profile), ("reason", reason)]).increment()
        Timer(label: KilnMetric.vmLifetimeSeconds.rawValue, dimensions: [("profile", profile)], preferredDisplayUnit: .seconds)
            .recordNanoseconds(Int64(clamping: lifetime.inMicroseconds) * 1_000)
        telemetry.emit(.vmDestroyed(.init(vm: id, reason: reason, lifetimeUs: lifetime.inMicroseconds, uses: UInt32(uses))))
    }

    public func poolResized(profile: String, from: Int, to: Int, reason: String) {
        telemetry.emit(.poolResized(.init(profile: profile, from: UInt32(from), to: UInt32(to), reason: reason)))
    }

    public func poolCounts(profile: String, idle: Int, busy: Int, target: Int) {
        Gauge(label: KilnMetric.poolIdleVms.rawValue, dimensions: [("profile", profile)]).record(idle)
        Gauge(label: KilnMetric.poolBusyVms.rawValue, dimensions: [("profile", profile)]).record(busy)
        Gauge(label: KilnMetric.poolTargetIdleVms.rawValue, dimensions: [("profile", profile)]).record(target)
    }
}

extension WorkerMetrics: AllocationObserver {
    public func vmReallocated(id: String, from: ResourceLimits, to: ResourceLimits, reason: String) {
        Counter(label: KilnMetric.vmReallocationsTotal.rawValue, dimensions: [("direction", to.cpus >= from.cpus && to.memoryMB >= from.memoryMB ? "up" : "down")])
            .increment()
        func allocation(_ limits: ResourceLimits) -> TelemetryEvent.Allocation {
            .init(memoryMB: UInt32(limits.memoryMB), cpuQuotaPercent: UInt32((limits.cpus * 100).rounded()))
        }
        telemetry.emit(.vmReallocated(.init(vm: id, from: allocation(from), to: allocation(to), reason: reason)))
    }
}

/// The pool's observer in a worker: the metrics and telemetry hear every event, and the latency
/// model learns from every VM provisioned how long the driver took (by its way of provisioning:
/// a snapshot template's first boot is not learned as a restore).
struct WorkerPoolObserver: PoolObserver {
    let metrics: WorkerMetrics
    let predictor: any LatencyPredictor

    func vmCreated(_ vm: CreatedVM) {
        metrics.vmCreated(vm)
        predictor.observeProvisioning(ProvisionOutcome(
            backend: vm.backend, profile: vm.profile.name, mode: vm.provisioning.method.rawValue,
            durationUs: Double(vm.provisioning.duration.inMicroseconds), hostCPU: vm.host.cpuUtilization,
            memoryPressure: vm.host.memoryPressure, concurrentProvisions: vm.concurrentProvisions))
    }

    func vmDestroyed(id: String, backend: String, profile: String, reason: String, lifetime: Duration, uses: Int, took: Duration) {
        metrics.vmDestroyed(id: id, backend: backend, profile: profile, reason: reason, lifetime: lifetime, uses: uses, took: took)
    }

    func poolResized(profile: String, from: Int, to: Int, reason: String) {
        metrics.poolResized(profile: profile, from: from, to: to, reason: reason)
    }

    func poolCounts(profile: String, idle: Int, busy: Int, target: Int) {
        metrics.poolCounts(profile: profile, idle: idle, busy: busy, target: target)
    }
}
