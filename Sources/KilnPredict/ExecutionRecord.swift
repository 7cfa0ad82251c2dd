import Foundation
import KilnWire

/// One finished invocation as the history keeps it: the features known before it ran, the
/// times measured, and the prediction made for it.
public struct ExecutionRecord: Codable, Sendable, Equatable {
    public var invocationID: String
    /// Unix time of the result, µs.
    public var recordedAtUs: UInt64
    public var method: String
    public var argsBytes: Int
    /// `key=value` pairs of the numeric args, `;`-separated, sorted by key.
    public var numericArgs: String
    public var profile: String
    public var vcpus: Int
    public var memoryMB: Int
    public var backend: String
    public var warmth: String
    public var reuseCount: Int
    public var hostCPU: Double
    public var memoryPressure: Double
    public var concurrentExecutions: Int
    public var queueDepth: Int
    public var idleVMs: Int
    public var provisionsInFlight: Int
    /// The version of the features (``ExecutionRecord/currentSchema``); `nil` in records made
    /// before versions were kept, which were version 1.
    public var schema: Int?
    public var networkBps: Double?
    public var cpuPressure: Double?
    public var dependencyMB: Double?
    public var unloadedDependencyMB: Double?
    public var deadlineMs: UInt64?
    public var provisionUs: Double
    public var execUs: Double
    public var succeeded: Bool
    public var predictedUs: Double?
    public var predictor: String?
    /// What the baseline (the moving averages) predicted for the same placement at the same
    /// moment: the live evaluation scores both on the same invocations.
    public var baselineUs: Double?
    /// The placement decision, one candidate per line (see `PlacementDecision.explanation`).
    public var placement: String?
    /// What the invocation consumed (see `InvocationResult.Usage`); nil in records made before
    /// usage was kept, and in fields the VM could not measure.
    public var usageCPUUs: UInt64?
    public var usageHostCPUUs: UInt64?
    public var usagePeakMemoryKB: UInt64?
    public var usageBytesIn: UInt64?
    public var usageBytesOut: UInt64?

    enum CodingKeys: String, CodingKey {
        case invocationID = "invocation_id"
        case recordedAtUs = "recorded_at_us"
        case method
        case argsBytes = "args_bytes"
        case numericArgs = "numeric_args"
        case profile, vcpus
        case memoryMB = "memory_mb"
        case backend, warmth
        case reuseCount = "reuse_count"
        case hostCPU = "host_cpu"
        case memoryPressure = "memory_pressure"
        case concurrentExecutions = "concurrent_executions"
        case queueDepth = "queue_depth"
        case idleVMs = "idle_vms"
        case provisionsInFlight = "provisions_in_flight"
        case schema
        case networkBps = "network_bps"
        case cpuPressure = "cpu_pressure"
        case dependencyMB = "dependency_mb"
        case unloadedDependencyMB = "unloaded_dependency_mb"
        case deadlineMs = "deadline_ms"
        case provisionUs = "provision_us"
        case execUs = "exec_us"
        case succeeded
        case predictedUs = "predicted_us"
        case predictor
        case baselineUs = "baseline_us"
        case placement
        case usageCPUUs = "usage_cpu_us"
        case usageHostCPUUs = "usage_host_cpu_us"
        case usagePeakMemoryKB = "usage_peak_memory_kb"
        case usageBytesIn = "usage_bytes_in"
        case usageBytesOut = "usage_bytes_out"
    }

    /// A record of `outcome`.
    public init(
        invocationID: String, recordedAtUs: UInt64, outcome: ExecutionOutcome, predictedUs: Double? = nil,
        predictor: String? = nil, baselineUs: Double? = nil, placement: String? = nil, usage: InvocationResult.Usage? = nil
    ) {
        let features = outcome.features
        self.invocationID = invocationID
        self.recordedAtUs = recordedAtUs
        self.method = features.method
        self.argsBytes = features.argsBytes
        self.numericArgs = features.numericArgs.keys.sorted().map { "\($0)=\(features.numericArgs[$0]!)" }.joined(separator: ";")
        self.profile = features.profile
        self.vcpus = features.vcpus
        self.memoryMB = features.memoryMB
        self.backend = features.backend
        self.warmth = features.warmth.rawValue
        self.reuseCount = features.reuseCount
        self.hostCPU = features.hostCPU
        self.memoryPressure = features.memoryPressure
        self.concurrentExecutions = features.concurrentExecutions
        self.queueDepth = features.queueDepth
        self.idleVMs = features.idleVMs
        self.provisionsInFlight = features.provisionsInFlight
        self.schema = Self.currentSchema
        self.networkBps = features.networkBps
        self.cpuPressure = features.cpuPressure
        self.dependencyMB = features.dependencyMB
        self.unloadedDependencyMB = features.unloadedDependencyMB
        self.deadlineMs = features.deadlineMs
        self.provisionUs = outcome.provisionUs
        self.execUs = outcome.execUs
        self.succeeded = outcome.succeeded
        self.predictedUs = predictedUs
        self.predictor = predictor
        self.baselineUs = baselineUs
        self.placement = placement
        self.usage = usage
    }

    /// The record as SQLite can hold it: its unsigned numbers at most `Int64.max` (a guest or an
    /// imported file may send any 64-bit value; SQLite's integers are signed).
    public var storable: ExecutionRecord {
        func clamped(_ value: UInt64) -> UInt64 { min(value, UInt64(Int64.max)) }
        var record = self
        record.recordedAtUs = clamped(recordedAtUs)
        record.deadlineMs = deadlineMs.map(clamped)
        record.usageCPUUs = usageCPUUs.map(clamped)
        record.usageHostCPUUs = usageHostCPUUs.map(clamped)
        record.usagePeakMemoryKB = usagePeakMemoryKB.map(clamped)
        record.usageBytesIn = usageBytesIn.map(clamped)
        record.usageBytesOut = usageBytesOut.map(clamped)
        return record
    }

    /// What the invocation consumed, as its result said.
    public var usage: InvocationResult.Usage? {
        get {
            let usage = InvocationResult.Usage(
                cpuUs: usageCPUUs, hostCPUUs: usageHostCPUUs, peakMemoryKB: usagePeakMemoryKB, bytesIn: usageBytesIn, bytesOut: usageBytesOut)
            return usage == InvocationResult.Usage() ? nil : usage
        }
        set {
            usageCPUUs = newValue?.cpuUs
            usageHostCPUUs = newValue?.hostCPUUs
            usagePeakMemoryKB = newValue?.peakMemoryKB
            usageBytesIn = newValue?.bytesIn
            usageBytesOut = newValue?.bytesOut
        }
    }

    /// The version of the features this build records and replays.
    public static let currentSchema = FeatureEncoding.schemaVersion

    /// The version of the features the record holds.
    public var featureSchema: Int { schema ?? 1 }

    /// Whether every number in it is finite: a record that is not is never replayed.
    public var isFinite: Bool {
        let numbers = [hostCPU, memoryPressure, provisionUs, execUs, networkBps ?? 0, cpuPressure ?? 0, dependencyMB ?? 0, unloadedDependencyMB ?? 0]
        return numbers.allSatisfy(\.isFinite) && outcome.features.isFinite
    }

    /// The outcome this record describes.
    public var outcome: ExecutionOutcome {
        var numbers: [String: Double] = [:]
        for pair in numericArgs.split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let value = Double(parts[1]) { numbers[String(parts[0])] = value }
        }
        let features = PlacementFeatures(
            method: method, argsBytes: argsBytes, numericArgs: numbers, profile: profile, vcpus: vcpus, memoryMB: memoryMB,
            backend: backend, warmth: VMWarmth(rawValue: warmth) ?? .warm, reuseCount: reuseCount, hostCPU: hostCPU,
            memoryPressure: memoryPressure, cpuPressure: cpuPressure ?? 0, networkBps: networkBps ?? 0, concurrentExecutions: concurrentExecutions,
            queueDepth: queueDepth, idleVMs: idleVMs, provisionsInFlight: provisionsInFlight, dependencyMB: dependencyMB ?? 0,
            unloadedDependencyMB: unloadedDependencyMB ?? 0, deadlineMs: deadlineMs ?? 0)
        return ExecutionOutcome(features: features, provisionUs: provisionUs, execUs: execUs, succeeded: succeeded)
    }

    /// The columns in CSV order.
    public static let csvHeader = CodingKeys.allNames.joined(separator: ",")

    /// The record as a CSV line (fields with commas, quotes or newlines are quoted).
    public var csvLine: String {
        func optional<Number: CustomStringConvertible>(_ value: Number?) -> String { value.map(\.description) ?? "" }
        let fields: [String] = [
            invocationID, String(recordedAtUs), method, String(argsBytes), numericArgs, profile, String(vcpus), String(memoryMB),
            backend, warmth, String(reuseCount), String(hostCPU), String(memoryPressure), String(concurrentExecutions),
            String(queueDepth), String(idleVMs), String(provisionsInFlight), optional(schema), optional(networkBps), optional(cpuPressure),
            optional(dependencyMB), optional(unloadedDependencyMB), optional(deadlineMs), String(provisionUs), String(execUs),
            succeeded ? "1" : "0", optional(predictedUs), predictor ?? "", optional(baselineUs), placement ?? "",
            optional(usageCPUUs), optional(usageHostCPUUs), optional(usagePeakMemoryKB), optional(usageBytesIn), optional(usageBytesOut),
        ]
        return fields.map(Self.quoted).joined(separator: ",")
    }

    private static func quoted(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

extension ExecutionRecord.CodingKeys: CaseIterable {
    static var allNames: [String] { allCases.map(\.rawValue) }
}
