import Foundation
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

    /// Adds a sample; a value that is not finite is ignored.
    public mutating func add(_ value: Double) {
        guard value.isFinite else { return }
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

/// The first predictor: a moving average of exec time per method and kind of VM (warm for the
/// method, warm for another, a first run), and of provisioning time per backend, profile and
/// way of provisioning. It knows nothing of load or size; it is the baseline the learned model
/// is measured against, and what that model falls back on before it has learned a method and
/// outside the range it has seen. A kind of VM a method has not run on yet is predicted from the
/// kinds it has, scaled by how much slower first runs were than warm ones for the methods that
/// had both.
///
/// A method that declares dependencies (see ``MethodDependencies``) and has never run on a VM
/// without them is predicted slower there by what loading them has cost the other methods,
/// per MiB.
public final class EWMAPredictor: LatencyPredictor {
    public struct Defaults: Sendable {
        /// Exec time assumed for a method never seen.
        public var execUs: Double
        /// Provisioning time assumed for a backend never seen.
        public var provisionUs: Double
        /// What loading a MiB of dependencies costs before any method has shown it.
        public var dependencyUsPerMB: Double
        /// How long the host waits past an invocation's deadline: no prediction goes beyond
        /// the deadline plus this.
        public var deadlineGrace: Duration

        public init(execUs: Double = 5_000, provisionUs: Double = 100_000, dependencyUsPerMB: Double = 2_000, deadlineGrace: Duration = .seconds(5)) {
            self.execUs = execUs
            self.provisionUs = provisionUs
            self.dependencyUsPerMB = dependencyUsPerMB
            self.deadlineGrace = deadlineGrace
        }
    }

    private struct State {
        var exec: [String: MovingEstimate] = [:]
        var provision: [String: MovingEstimate] = [:]
        /// The way each backend and profile provisioned last (`restore` once a template exists).
        var lastMode: [String: String] = [:]
        var allExec = MovingEstimate(alpha: 0.05)
        /// Extra exec time per MiB of dependencies a VM had not loaded, over the method's warm time.
        var dependencyUsPerMB = MovingEstimate(alpha: 0.1)
        /// Log of how much slower a method's first run on a VM is than a run on a warm VM, over
        /// the methods that have had both.
        var firstOverWarm = MovingEstimate(alpha: 0.1)
    }

    private let state = Mutex(State())
    private let alpha: Double
    public let defaults: Defaults
    public let name = "ewma"

    /// Creates a predictor.
    /// - Parameters:
    ///   - alpha: Weight of the newest sample.
    ///   - defaults: What to assume before any sample, and the deadline's grace.
    public init(alpha: Double = 0.2, defaults: Defaults = Defaults()) {
        self.alpha = alpha
        self.defaults = defaults
    }

    /// How far along a VM is for a method: the three kinds of VM the averages keep apart.
    private enum Stage: String {
        /// It ran this method last.
        case warmForMethod = "warm_method"
        /// It ran another method last (under emulation, mostly as fast: the guest's code paths
        /// are translated, its page cache filled; a serve-mode runtime starts again).
        case warmForAnother = "warm"
        /// Its first run: a fresh VM, or one provisioned for the invocation.
        case first

        init(_ warmth: VMWarmth) {
            switch warmth {
            case .warmForMethod: self = .warmForMethod
            case .warm: self = .warmForAnother
            case .fresh, .notProvisioned: self = .first
            }
        }
    }

    private static func execKey(_ method: String, _ stage: Stage) -> String {
        "\(method)|\(stage.rawValue)"
    }

    private static func profileKey(_ backend: String, _ profile: String) -> String {
        "\(backend)|\(profile)"
    }

    public func predict(_ features: PlacementFeatures) -> LatencyPrediction {
        state.withLock { state in
            let stage = Stage(features.warmth)
            let exec = state.exec
            func estimate(_ stage: Stage) -> MovingEstimate? { exec[Self.execKey(features.method, stage)] }
            let warm = estimate(.warmForMethod) ?? estimate(.warmForAnother)
            let first = estimate(.first)
            // How much slower a first run has been than a warm one, over the methods that had both.
            let slower = exp(state.firstOverWarm.samples > 0 ? state.firstOverWarm.mean : 0)
            var execMean: Double
            var spread: Double
            if let own = estimate(stage) {
                (execMean, spread) = (own.mean, own.standardDeviation)
            } else if stage != .first, let warm {
                (execMean, spread) = (warm.mean, warm.mean)
            } else if stage != .first, let first {
                (execMean, spread) = (first.mean / slower, first.mean / slower)
            } else if stage == .first, let warm {
                (execMean, spread) = (warm.mean * slower, warm.mean * slower)
            } else {
                execMean = state.allExec.samples > 0 ? state.allExec.mean : defaults.execUs
                spread = execMean
            }
            if stage != .warmForMethod, first == nil, features.unloadedDependencyMB > 0 {
                let loading = features.unloadedDependencyMB * Self.dependencyRate(state, defaults)
                execMean += loading
                spread += loading
            }
            let ceiling = features.execCeilingUs(grace: defaults.deadlineGrace)
            execMean = min(execMean, ceiling)
            var provisionMean = 0.0
            if features.warmth == .notProvisioned {
                let key = Self.profileKey(features.backend, features.profile)
                let provision = state.provision["\(key)|\(state.lastMode[key] ?? "restore")"]
                provisionMean = provision?.mean ?? defaults.provisionUs
                spread += provision?.standardDeviation ?? provisionMean
            }
            return LatencyPrediction(provisionUs: provisionMean, execUs: execMean, uncertaintyUs: min(spread, ceiling))
        }
    }

    /// What loading `megabytes` of dependencies is expected to add to an exec.
    public func dependencyCostUs(_ megabytes: Double) -> Double {
        state.withLock { max(0, megabytes) * Self.dependencyRate($0, defaults) }
    }

    private static func dependencyRate(_ state: State, _ defaults: Defaults) -> Double {
        state.dependencyUsPerMB.samples > 0 ? state.dependencyUsPerMB.mean : defaults.dependencyUsPerMB
    }

    public func observeProvisioning(_ outcome: ProvisionOutcome) {
        guard outcome.durationUs.isFinite, outcome.durationUs > 0 else { return }
        state.withLock { state in
            let key = Self.profileKey(outcome.backend, outcome.profile)
            state.provision["\(key)|\(outcome.mode)", default: MovingEstimate(alpha: alpha)].add(outcome.durationUs)
            state.lastMode[key] = outcome.mode
        }
    }

    public func observe(_ outcome: ExecutionOutcome) {
        let features = outcome.features
        guard outcome.succeeded, outcome.execUs.isFinite, outcome.execUs >= 0, features.isFinite else { return }
        state.withLock { state in
            let stage = Stage(features.warmth)
            let warmForMethod = state.exec[Self.execKey(features.method, .warmForMethod)]
            if stage != .warmForMethod, features.unloadedDependencyMB > 0, let warmForMethod {
                state.dependencyUsPerMB.add(max(0, outcome.execUs - warmForMethod.mean) / features.unloadedDependencyMB)
            }
            state.exec[Self.execKey(features.method, stage), default: MovingEstimate(alpha: alpha)].add(outcome.execUs)
            state.allExec.add(outcome.execUs)
            if let warm = warmForMethod ?? state.exec[Self.execKey(features.method, .warmForAnother)],
               let first = state.exec[Self.execKey(features.method, .first)], warm.mean > 0, first.mean > 0 {
                state.firstOverWarm.add(log(first.mean / warm.mean))
            }
        }
    }
}

extension PlacementFeatures {
    /// The most an exec can take: the deadline plus the host's grace (infinite without a deadline).
    public func execCeilingUs(grace: Duration) -> Double {
        guard deadlineMs > 0 else { return .infinity }
        let (seconds, attoseconds) = grace.components
        return Double(deadlineMs) * 1_000 + Double(seconds) * 1e6 + Double(attoseconds) / 1e12
    }
}
