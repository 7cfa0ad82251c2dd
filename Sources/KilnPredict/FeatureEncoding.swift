import Foundation

/// Turns placement features into the columns the regression models fit. Exec times are fitted in
/// log space: the effects that matter (CPU contention, a fresh VM, the size of the work) act
/// multiplicatively, and a log target keeps one slow outlier from dragging the whole fit.
///
/// Every column is bounded in what it can do to a prediction: sizes, counts and numeric
/// arguments enter as logarithms (a power law at most, never `e^value`), fractions as they
/// are, and the predictor clips each column to the range it had in training.
enum FeatureEncoding {
    /// The version of the features a history record holds; a worker replays only records of
    /// its own version. 2: dependencies, CPU pressure, network load and the deadline; log-only
    /// arguments.
    static let schemaVersion = 2

    /// Numeric args a method's model takes, at most: the first keys seen, in sorted order.
    static let maximumArgs = 4

    /// Columns before the arguments'.
    static let fixedColumns = 13

    /// The exec columns of a method whose model uses `argKeys`.
    static func exec(_ features: PlacementFeatures, argKeys: [String]) -> [Double] {
        var vector: [Double] = [
            // The three warmth levels: with the model's intercept one of them is redundant, and
            // the fit leaves it out.
            features.warmth == .warmForMethod ? 1 : 0,
            features.warmth == .warm ? 1 : 0,
            features.warmth == .fresh || features.warmth == .notProvisioned ? 1 : 0,
            log1p(Double(max(0, features.argsBytes))),
            features.hostCPU,
            features.cpuPressure,
            features.memoryPressure,
            log1p(features.networkBps / 1_000_000),
            log1p(Double(max(0, features.concurrentExecutions))),
            log1p(Double(max(0, features.reuseCount))),
            // The VM's size: a profile's own VMs all share it, a larger profile's lent VM does not.
            log(Double(max(1, features.vcpus))),
            log(Double(max(1, features.memoryMB))),
            log1p(max(0, features.unloadedDependencyMB)),
        ]
        for key in argKeys {
            let value = signedLog(features.numericArgs[key] ?? 0)
            // A log term for work that scales, its square for a fixed part on top (`a + b·ms` is
            // convex in log ms); both are clipped to the training range, so neither extrapolates.
            vector.append(value)
            vector.append(value * value)
        }
        return vector
    }

    static func execDimension(argCount: Int) -> Int { fixedColumns + 2 * argCount }

    /// The provisioning columns.
    static func provision(hostCPU: Double, memoryPressure: Double, inFlight: Int) -> [Double] {
        [hostCPU, memoryPressure, log1p(Double(max(0, inFlight)))]
    }

    static let provisionDimension = 3

    /// `log(1 + |x|)` with the sign of `x`: defined for every finite number, and flat enough
    /// that no argument moves a prediction by more than a power of itself.
    static func signedLog(_ value: Double) -> Double {
        guard value.isFinite else { return 0 }
        return value < 0 ? -log1p(-value) : log1p(value)
    }
}
