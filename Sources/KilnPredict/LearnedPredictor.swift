import Foundation
import Synchronization

/// The latency model. Per method, an online ridge regression with forgetting
/// (``ForgettingRidge``) of log exec time on the invocation's numeric args and size, the
/// candidate VM's warmth, reuse, size and the dependencies it has not loaded, and the host's
/// CPU load and pressure, memory pressure, network load and concurrency, corrected by a share
/// of the host's recent drift (how much slower than predicted the last invocations of any
/// method ran, held to a factor of e^±0.5); per backend, profile and way of
/// provisioning (restore, boot), the same for provisioning time on host load and provisions in
/// flight. That makes a prediction for a VM that does not exist yet: provisioning under the
/// current load, plus exec on a fresh VM.
///
/// It is bounded by construction, whatever the history holds:
/// - a method's model is used only once it has ``Settings/samplesPerWeight`` times more
///   outcomes than it has columns in use (and at least ``Settings/minimumSamples``); before
///   that the moving averages of ``EWMAPredictor``, kept alongside, answer;
/// - every column is clipped to the range it had in training, and the further outside it an
///   invocation is, the more the prediction leans on the moving average;
/// - no prediction goes above the invocation's deadline plus the grace, nor below half the
///   fastest exec the method has had;
/// - an outcome that is not finite, or would make the fit so, is refused and counted
///   (``rejectedUpdates``).
public final class LearnedPredictor: LatencyPredictor {
    public struct Settings: Sendable {
        /// Outcomes a model needs at least before its predictions are used.
        public var minimumSamples = 20
        /// And this many per column the fit uses (plus its intercept).
        public var samplesPerWeight = 5.0
        /// Weight of the past per update: 0.995 forgets half in about 140 invocations.
        public var forgetting = 0.995
        /// The ridge penalty on standardised coefficients.
        public var ridge = 0.01
        /// Weight of the newest squared residual in the uncertainty estimate.
        public var residualAlpha = 0.05
        /// Residuals beyond this many standard deviations weigh less in the fit, in proportion
        /// (a Huber loss): a run that a neighbour's burst slowed tenfold moves the fit little.
        public var outlierThreshold = 1.0
        /// Weight of the newest log residual in the host's recent drift (over every method).
        public var driftAlpha = 0.3
        /// The share of the recent drift a live prediction takes on: when the last few
        /// invocations, whatever their method, ran slower than predicted, the host is busier than
        /// its features said, and the next one likely runs slower too.
        public var driftShare = 0.5
        /// The share of the fastest exec seen under which a method's prediction never goes.
        public var floorShare = 0.5
        /// The longest provisioning predicted.
        public var maximumProvisionUs = 120_000_000.0

        public init() {}
    }

    /// Why an update was refused (the label of `kiln_model_rejected_updates_total`).
    public enum Rejection: String, Sendable, CaseIterable {
        /// The outcome held a number that is not finite.
        case nonFiniteInput = "non_finite_input"
        /// Learning it would have made the fit not finite.
        case nonFiniteFit = "non_finite_fit"
    }

    private struct ExecModel {
        var argKeys: [String]
        var regression: ForgettingRidge
        /// Moving average of squared log-space residuals, measured before each update.
        var residual = 0.04
        /// The fastest exec seen, µs.
        var fastestUs = Double.infinity
        /// Outcomes on VMs that had not loaded all of the method's dependencies.
        var withoutDependencies = 0
    }

    private struct ProvisionModel {
        var regression = ForgettingRidge(dimension: FeatureEncoding.provisionDimension)
        var residual = 0.04
    }

    private struct State {
        var exec: [String: ExecModel] = [:]
        var provision: [String: ProvisionModel] = [:]
        var lastMode: [String: String] = [:]
        /// Moving average of the log residuals of live models, over every method: the host's
        /// load of the last seconds beyond what the features measure. Held to ±1.
        var drift = 0.0
    }

    private let state = Mutex(State())
    private let settings: Settings
    private let fallback: EWMAPredictor
    private let rejected = Atomic<Int>(0)
    private let onRejection: @Sendable (Rejection) -> Void
    public let name = "ridge"

    /// - Parameters:
    ///   - settings: When models go live and how they learn.
    ///   - fallback: The moving averages used before a model is live and outside its range.
    ///   - onRejection: Hears every refused update (the worker counts them in a metric).
    public init(settings: Settings = Settings(), fallback: EWMAPredictor = EWMAPredictor(), onRejection: @escaping @Sendable (Rejection) -> Void = { _ in }) {
        self.settings = settings
        self.fallback = fallback
        self.onRejection = onRejection
    }

    /// Updates refused since the predictor was made.
    public var rejectedUpdates: Int { rejected.load(ordering: .relaxed) }

    /// What the model knows of one method (`/model` on a worker's status port shows it).
    public struct MethodState: Sendable, Codable, Equatable {
        /// Outcomes learned.
        public var outcomes: Int
        /// Outcomes needed before its predictions are used.
        public var outcomesToGoLive: Int
        /// Whether its predictions are used.
        public var live: Bool
        /// The columns its fit uses (the rest stayed constant or repeat others).
        public var columns: Int
        /// The numeric arguments it reads.
        public var arguments: [String]

        enum CodingKeys: String, CodingKey {
            case outcomes
            case outcomesToGoLive = "outcomes_to_go_live"
            case live, columns, arguments
        }
    }

    /// Every method's state, by name.
    public func methodStates() -> [String: MethodState] {
        state.withLock { state in
            state.exec.mapValues { model in
                MethodState(
                    outcomes: model.regression.samples, outcomesToGoLive: outcomesToGoLive(model.regression), live: isLive(model),
                    columns: model.regression.fit.activeCount, arguments: model.argKeys)
            }
        }
    }

    /// Whether the model of `method` makes the predictions (else the moving averages do).
    public func isLive(_ method: String) -> Bool {
        state.withLock { $0.exec[method].map(isLive) ?? false }
    }

    private func isLive(_ model: ExecModel) -> Bool {
        isLive(model.regression)
    }

    private func isLive(_ regression: ForgettingRidge) -> Bool {
        regression.samples >= outcomesToGoLive(regression)
    }

    private func outcomesToGoLive(_ regression: ForgettingRidge) -> Int {
        max(settings.minimumSamples, Int((settings.samplesPerWeight * Double(regression.fit.activeCount + 1)).rounded(.up)))
    }

    public func predict(_ features: PlacementFeatures) -> LatencyPrediction {
        let baseline = fallback.predict(features)
        let ceiling = features.execCeilingUs(grace: fallback.defaults.deadlineGrace)
        return state.withLock { state in
            var execUs = baseline.execUs
            var spread = baseline.uncertaintyUs - (features.warmth == .notProvisioned ? baseline.provisionUs : 0)
            if let model = state.exec[features.method], isLive(model) {
                let (columns, outside) = model.regression.clip(FeatureEncoding.exec(features, argKeys: model.argKeys))
                var logUs = model.regression.predict(columns) + settings.driftShare * state.drift
                // Outside the range it learned, the model's word counts for less.
                let trust = max(0, 1 - outside)
                logUs = trust * logUs + (1 - trust) * log(max(baseline.execUs, 1))
                var predicted = exp(min(logUs, 40))
                if features.unloadedDependencyMB > 0, model.withoutDependencies < settings.minimumSamples / 4 {
                    // It never saw this method on a VM without its dependencies: add what loading them costs others.
                    predicted += fallback.dependencyCostUs(features.unloadedDependencyMB)
                }
                predicted = max(predicted, model.fastestUs * settings.floorShare)
                if predicted.isFinite {
                    execUs = predicted
                    spread = predicted * (model.residual.squareRoot() + (1 - trust))
                }
            }
            execUs = min(execUs, ceiling)
            spread = min(max(spread, 0), ceiling)
            var provisionUs = 0.0
            if features.warmth == .notProvisioned {
                provisionUs = baseline.provisionUs
                var provisionSpread = baseline.provisionUs
                let profile = "\(features.backend)|\(features.profile)"
                if let model = state.provision["\(profile)|\(state.lastMode[profile] ?? "restore")"], isLive(model.regression) {
                    let (columns, outside) = model.regression.clip(FeatureEncoding.provision(
                        hostCPU: features.hostCPU, memoryPressure: features.memoryPressure, inFlight: features.provisionsInFlight + 1))
                    let trust = max(0, 1 - outside)
                    let logUs = trust * model.regression.predict(columns) + (1 - trust) * log(max(baseline.provisionUs, 1))
                    let predicted = min(exp(min(logUs, 40)), settings.maximumProvisionUs)
                    if predicted.isFinite {
                        provisionUs = predicted
                        provisionSpread = predicted * (model.residual.squareRoot() + (1 - trust))
                    }
                }
                spread += min(provisionSpread, settings.maximumProvisionUs)
            }
            return LatencyPrediction(provisionUs: provisionUs, execUs: execUs, uncertaintyUs: spread)
        }
    }

    public func observe(_ outcome: ExecutionOutcome) {
        fallback.observe(outcome)
        guard outcome.succeeded else { return }
        let features = outcome.features
        guard features.isFinite, outcome.execUs.isFinite else { return reject(.nonFiniteInput) }
        guard outcome.execUs > 0 else { return }
        let refused = state.withLock { state -> Bool in
            var model = state.exec[features.method] ?? {
                let keys = Array(features.numericArgs.keys.sorted().prefix(FeatureEncoding.maximumArgs))
                return ExecModel(argKeys: keys, regression: ForgettingRidge(
                    dimension: FeatureEncoding.execDimension(argCount: keys.count), forgetting: settings.forgetting, ridge: settings.ridge))
            }()
            let columns = FeatureEncoding.exec(features, argKeys: model.argKeys)
            let target = log(outcome.execUs)
            let error = target - model.regression.predict(model.regression.clip(columns).features)
            if isLive(model), error.isFinite {
                state.drift = min(max(state.drift + settings.driftAlpha * (error - state.drift), -1), 1)
            }
            guard model.regression.add(columns, target: target, weight: outlierWeight(error, model)) else { return true }
            model.fastestUs = min(model.fastestUs, outcome.execUs)
            if features.unloadedDependencyMB > 0 { model.withoutDependencies += 1 }
            learnResidual(&model.residual, error: error, samples: model.regression.samples)
            state.exec[features.method] = model
            return false
        }
        if refused { reject(.nonFiniteFit) }
    }

    /// The history's last outcomes say nothing of the host's load now: the drift starts again.
    public func historyReplayed() {
        state.withLock { $0.drift = 0 }
    }

    public func observeProvisioning(_ outcome: ProvisionOutcome) {
        fallback.observeProvisioning(outcome)
        guard outcome.durationUs.isFinite, outcome.hostCPU.isFinite, outcome.memoryPressure.isFinite else { return reject(.nonFiniteInput) }
        guard outcome.durationUs > 0 else { return }
        let refused = state.withLock { state -> Bool in
            let profile = "\(outcome.backend)|\(outcome.profile)"
            state.lastMode[profile] = outcome.mode
            let key = "\(profile)|\(outcome.mode)"
            var model = state.provision[key] ?? ProvisionModel()
            let columns = FeatureEncoding.provision(
                hostCPU: outcome.hostCPU, memoryPressure: outcome.memoryPressure, inFlight: outcome.concurrentProvisions)
            let target = log(outcome.durationUs)
            let error = target - model.regression.predict(model.regression.clip(columns).features)
            guard model.regression.add(columns, target: target) else { return true }
            learnResidual(&model.residual, error: error, samples: model.regression.samples)
            state.provision[key] = model
            return false
        }
        if refused { reject(.nonFiniteFit) }
    }

    /// The Huber weight of a residual, once the model is live and knows its spread.
    private func outlierWeight(_ error: Double, _ model: ExecModel) -> Double {
        guard isLive(model), error.isFinite else { return 1 }
        let limit = settings.outlierThreshold * model.residual.squareRoot()
        return abs(error) > limit ? limit / abs(error) : 1
    }

    private func learnResidual(_ residual: inout Double, error: Double, samples: Int) {
        // The residual counts once the model has had a few samples to settle.
        guard samples > 3, error.isFinite else { return }
        residual += settings.residualAlpha * (min(error * error, 4) - residual)
    }

    private func reject(_ reason: Rejection) {
        rejected.add(1, ordering: .relaxed)
        onRejection(reason)
    }
}
