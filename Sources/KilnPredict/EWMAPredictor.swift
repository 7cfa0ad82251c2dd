import Synchronization

/// An exponentially weighted moving average with its variance.
public struct MovingEstimate: Sendable, Equatable {
    public private(set) var mean: Double
    public private(set) var variance: Double
    public private(set) var samples: Int
    /// Weight of the newest sample, 0…1.
    public let alpha: Double

    public init(alpha: Double, initial: Double? = nil) {
        self.alpha = alpha
        self.mean = initial ?? 0
        self.variance = 0
        self.samples = initial == nil ? 0 : 1
    }

    public mutating func add(_ value: Double) {
        guard samples > 0 else {
            mean = value
            samples = 1
            return
        }
        let difference = value - mean
        mean += alpha * difference
        variance = (1 - alpha) * (variance + alpha * difference * difference)
        samples += 1
    }

    public var standardDeviation: Double { variance.squareRoot() }
}

/// The first predictor: a moving average of exec time per method and VM warmth, and of
/// provisioning time per backend and profile. It knows nothing of load or size; it is the
/// baseline the learned models are measured against.
public final class EWMAPredictor: LatencyPredictor {
    public struct Defaults: Sendable {
        /// Exec time assumed for a method never seen.
        public var execUs: Double
        /// Provisioning time assumed for a backend never seen.
        public var provisionUs: Double

        public init(execUs: Double = 5_000, provisionUs: Double = 100_000) {
            self.execUs = execUs
            self.provisionUs = provisionUs
        }
    }

    private struct State {
        var exec: [String: MovingEstimate] = [:]
        var provision: [String: MovingEstimate] = [:]
        var allExec = MovingEstimate(alpha: 0.05)
    }

    private let state = Mutex(State())
    private let alpha: Double
    private let defaults: Defaults
    public let name = "ewma"

    /// Creates a predictor.
    /// - Parameters:
    ///   - alpha: Weight of the newest sample.
    ///   - defaults: What to assume before any sample.
    public init(alpha: Double = 0.2, defaults: Defaults = Defaults()) {
        self.alpha = alpha
        self.defaults = defaults
    }

    private static func execKey(_ features: PlacementFeatures) -> String {
        let warmth = features.warmth == .warmForMethod ? "warm" : "cold"
        return "\(features.method)|\(warmth)"
    }

    private static func provisionKey(_ features: PlacementFeatures) -> String {
        "\(features.backend)|\(features.profile)"
    }

    public func predict(_ features: PlacementFeatures) -> LatencyPrediction {
        state.withLock { state in
            let execKey = Self.execKey(features)
            let exec = state.exec[execKey]
                ?? state.exec["\(features.method)|warm"]
                ?? state.exec["\(features.method)|cold"]
            let execMean = exec?.mean ?? (state.allExec.samples > 0 ? state.allExec.mean : defaults.execUs)
            var spread = exec?.standardDeviation ?? execMean
            var provisionMean = 0.0
            if features.warmth == .notProvisioned {
                let provision = state.provision[Self.provisionKey(features)]
                provisionMean = provision?.mean ?? defaults.provisionUs
                spread += provision?.standardDeviation ?? provisionMean
            }
            return LatencyPrediction(provisionUs: provisionMean, execUs: execMean, uncertaintyUs: spread)
        }
    }

    public func observeProvisioning(_ outcome: ProvisionOutcome) {
        state.withLock { state in
            state.provision["\(outcome.backend)|\(outcome.profile)", default: MovingEstimate(alpha: alpha)].add(outcome.durationUs)
        }
    }

    public func observe(_ outcome: ExecutionOutcome) {
        state.withLock { state in
            if outcome.provisionUs > 0 {
                state.provision[Self.provisionKey(outcome.features), default: MovingEstimate(alpha: alpha)].add(outcome.provisionUs)
            }
            guard outcome.succeeded else { return }
            state.exec[Self.execKey(outcome.features), default: MovingEstimate(alpha: alpha)].add(outcome.execUs)
            state.allExec.add(outcome.execUs)
        }
    }
}
