/// Every metric the worker exports, by the name Prometheus shows: the only names the worker
/// records, and the only ones `deploy/grafana/kiln.json` and `deploy/prometheus/kiln-rules.yml`
/// may use (the tests hold them to it).
public enum KilnMetric: String, CaseIterable, Sendable {
    case affinityForwardedTotal = "kiln_affinity_forwarded_total"
    case batchedInvocationsTotal = "kiln_batched_invocations_total"
    case batchesTotal = "kiln_batches_total"
    case deadLettersTotal = "kiln_dead_letters_total"
    case execSeconds = "kiln_exec_seconds"
    case hostCpuPressure = "kiln_host_cpu_pressure"
    case hostCpuUtilization = "kiln_host_cpu_utilization"
    case hostMemoryAvailableBytes = "kiln_host_memory_available_bytes"
    case hostMemoryPressure = "kiln_host_memory_pressure"
    case hostNetworkReceiveBytesPerSecond = "kiln_host_network_receive_bytes_per_second"
    case hostNetworkTransmitBytesPerSecond = "kiln_host_network_transmit_bytes_per_second"
    case invocationsTotal = "kiln_invocations_total"
    case methodCpuSecondsTotal = "kiln_method_cpu_seconds_total"
    case methodHostCpuSecondsTotal = "kiln_method_host_cpu_seconds_total"
    case modelErrorRatio = "kiln_model_error_ratio"
    case modelRejectedUpdatesTotal = "kiln_model_rejected_updates_total"
    case overheadSeconds = "kiln_overhead_seconds"
    case poolBusyVms = "kiln_pool_busy_vms"
    case poolIdleVms = "kiln_pool_idle_vms"
    case poolTargetIdleVms = "kiln_pool_target_idle_vms"
    case poolWaitingInvocations = "kiln_pool_waiting_invocations"
    case telemetryDroppedTotal = "kiln_telemetry_dropped_total"
    case telemetryPublishFailuresTotal = "kiln_telemetry_publish_failures_total"
    case totalSeconds = "kiln_total_seconds"
    case vmCreateSeconds = "kiln_vm_create_seconds"
    case vmDestroySeconds = "kiln_vm_destroy_seconds"
    case vmLifetimeSeconds = "kiln_vm_lifetime_seconds"
    case vmDestroyedTotal = "kiln_vm_destroyed_total"
    case vmReallocationsTotal = "kiln_vm_reallocations_total"
    case workerInfo = "kiln_worker_info"

    /// How Prometheus exposes a metric.
    public enum Kind: Sendable {
        case counter, gauge
        /// A swift-metrics `Timer`: `_bucket`, `_sum` and `_count` series, in seconds.
        case histogram
    }

    public var kind: Kind {
        switch self {
        case .execSeconds, .overheadSeconds, .totalSeconds, .vmCreateSeconds, .vmDestroySeconds, .vmLifetimeSeconds:
            return .histogram
        case .hostCpuPressure, .hostCpuUtilization, .hostMemoryAvailableBytes, .hostMemoryPressure,
             .hostNetworkReceiveBytesPerSecond, .hostNetworkTransmitBytesPerSecond, .modelErrorRatio,
             .poolBusyVms, .poolIdleVms, .poolTargetIdleVms, .poolWaitingInvocations, .workerInfo:
            return .gauge
        case .affinityForwardedTotal, .batchedInvocationsTotal, .batchesTotal, .deadLettersTotal, .invocationsTotal, .methodCpuSecondsTotal, .methodHostCpuSecondsTotal,
             .modelRejectedUpdatesTotal, .telemetryDroppedTotal, .telemetryPublishFailuresTotal, .vmDestroyedTotal,
             .vmReallocationsTotal:
            return .counter
        }
    }

    /// The series names a scrape holds for it.
    public var seriesNames: [String] {
        kind == .histogram ? ["_bucket", "_sum", "_count"].map { rawValue + $0 } : [rawValue]
    }
}
