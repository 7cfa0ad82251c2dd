import Foundation

/// Turns placement features into the numbers the regression models fit. Exec times are fitted
/// in log space: the effects that matter (CPU contention, a fresh VM, the size of the work) act
/// multiplicatively, and a log target keeps one slow outlier from dragging the whole fit.
enum FeatureEncoding {
    /// Numeric args a method's model takes, at most: the first keys seen, in sorted order.
    static let maximumArgs = 4

    /// The exec features of a method whose model uses `argKeys`.
    static func exec(_ features: PlacementFeatures, argKeys: [String]) -> [Double] {
        var vector: [Double] = [
            1,
            features.warmth == .warmForMethod ? 1 : 0,
            features.warmth == .warm ? 1 : 0,
            features.warmth == .fresh || features.warmth == .notProvisioned ? 1 : 0,
            log1p(Double(features.argsBytes)) / 10,
            features.hostCPU,
            features.memoryPressure,
            log1p(Double(features.concurrentExecutions)),
            log1p(Double(features.reuseCount)) / 5,
            // The VM's size: a profile's own VMs all share it, a larger profile's lent VM does not.
            log(Double(max(1, features.vcpus))),
            log(Double(max(64, features.memoryMB)) / 128),
        ]
        for key in argKeys {
            let value = max(0, features.numericArgs[key] ?? 0)
            // Both shapes: a log term for work that scales, a linear one for a fixed part on top.
            vector.append(log1p(value))
            vector.append(value / 1_000)
        }
        return vector
    }

    static func execDimension(argCount: Int) -> Int { 11 + 2 * argCount }

    /// The provisioning features.
    static func provision(hostCPU: Double, memoryPressure: Double, inFlight: Int) -> [Double] {
        [1, hostCPU, memoryPressure, log1p(Double(max(0, inFlight)))]
    }

    static let provisionDimension = 4
}
