import Foundation
import Synchronization

/// The latency model: per method, an online regression (recursive least squares with
/// forgetting) of log exec time on the invocation's numeric args and size, the candidate VM's
/// warmth, reuse and size (vCPUs, memory), and the host's CPU load, memory pressure and concurrency; per backend and
/// profile, the same for provisioning time on host load and provisions in flight. That makes a
/// prediction for a VM that does not exist yet: provisioning under the current load, plus exec
/// on a fresh VM.
///
/// A method with fewer than ``Settings/minimumSamples`` outcomes falls back to the moving
/// averages of ``EWMAPredictor``, which it keeps up to date alongside.
public final class LearnedPredictor: LatencyPredictor {
    public struct Settings: Sendable {
        /// Outcomes a model needs before its predictions are used.
        public var minimumSamples = 12
        /// Weight of the past per update: 0.995 forgets half in about 140 invocations.
        public var forgetting = 0.995
        /// Weight of the newest squared residual in the uncertainty estimate.
        public var residualAlpha = 0.05

        public init() {}
    }

    private struct Model {
        var argKeys: [String]
        var regression: RecursiveLeastSquares
        /// Moving average of squared log-space residuals.
        var residual: Double = 0.04
        var samples = 0
    }

    private struct State {
        var exec: [String: Model] = [:]
        var provision: [String: Model] = [:]
    }

    private let state = Mutex(State())
    private let settings: Settings
    private let fallback: EWMAPredictor
    public let name = "rls"

    public init(settings: Settings = Settings(), fallback: EWMAPredictor = EWMAPredictor()) {
        self.settings = settings
        self.fallback = fallback
    }

    public func predict(_ features: PlacementFeatures) -> LatencyPrediction {
        let baseline = fallback.predict(features)
        return state.withLock { state in
            var execUs = baseline.execUs
            var spread = baseline.uncertaintyUs - (features.warmth == .notProvisioned ? baseline.provisionUs : 0)
            if let model = state.exec[features.method], model.samples >= settings.minimumSamples {
                let log = model.regression.predict(FeatureEncoding.exec(features, argKeys: model.argKeys))
                execUs = exp(min(log, 25))
                spread = execUs * model.residual.squareRoot()
            }
            var provisionUs = 0.0
            if features.warmth == .notProvisioned {
                provisionUs = baseline.provisionUs
                var provisionSpread = baseline.provisionUs
                let key = "\(features.backend)|\(features.profile)"
                if let model = state.provision[key], model.samples >= settings.minimumSamples {
                    let vector = FeatureEncoding.provision(
                        hostCPU: features.hostCPU, memoryPressure: features.memoryPressure, inFlight: features.provisionsInFlight + 1)
                    provisionUs = exp(min(model.regression.predict(vector), 25))
                    provisionSpread = provisionUs * model.residual.squareRoot()
                }
                spread += provisionSpread
            }
            return LatencyPrediction(provisionUs: provisionUs, execUs: execUs, uncertaintyUs: max(spread, 0))
        }
    }

    public func observe(_ outcome: ExecutionOutcome) {
        fallback.observe(outcome)
        guard outcome.succeeded, outcome.execUs > 0 else { return }
        let features = outcome.features
        state.withLock { state in
            var model = state.exec[features.method] ?? {
                let keys = Array(features.numericArgs.keys.sorted().prefix(FeatureEncoding.maximumArgs))
                return Model(argKeys: keys, regression: RecursiveLeastSquares(
                    dimension: FeatureEncoding.execDimension(argCount: keys.count), forgetting: settings.forgetting))
            }()
            learn(&model, FeatureEncoding.exec(features, argKeys: model.argKeys), target: log(outcome.execUs))
            state.exec[features.method] = model
        }
    }

    public func observeProvisioning(_ outcome: ProvisionOutcome) {
        fallback.observeProvisioning(outcome)
        guard outcome.durationUs > 0 else { return }
        state.withLock { state in
            let key = "\(outcome.backend)|\(outcome.profile)"
            var model = state.provision[key] ?? Model(
                argKeys: [], regression: RecursiveLeastSquares(dimension: FeatureEncoding.provisionDimension, forgetting: settings.forgetting))
            let vector = FeatureEncoding.provision(
                hostCPU: outcome.hostCPU, memoryPressure: outcome.memoryPressure, inFlight: outcome.concurrentProvisions)
            learn(&model, vector, target: log(outcome.durationUs))
            state.provision[key] = model
        }
    }

    private func learn(_ model: inout Model, _ vector: [Double], target: Double) {
        let error = model.regression.update(vector, target: target)
        // The residual counts once the model has had a few samples to settle.
        if model.samples >= 3 {
            model.residual += settings.residualAlpha * (min(error * error, 4) - model.residual)
        }
        model.samples += 1
    }
}
