import KilnPool
import KilnPredict

/// Scores candidates: predicted latency (provision + exec, with its uncertainty; the model knows
/// how warm each VM is for the method), the affinity key, and what each takes from the host. An
/// idle VM's resources are already spent; a new VM costs memory, CPU and network headroom, more
/// so on a loaded host, so that a busy host prefers to wait briefly for a warm VM rather than
/// start another.
///
/// It is total: a prediction that is not finite is replaced by the baseline's, and when no
/// candidate's suitability is finite the first candidate is taken; the explanation says which.
public struct SuitabilityScorer: Sendable {
    /// The latency model.
    public var predictor: any LatencyPredictor
    /// What answers when the model's prediction is not finite (the moving averages).
    public var baseline: any LatencyPredictor
    /// Standard deviations of predicted latency added, to prefer the predictable.
    public var riskAversion: Double
    /// Factor on the effective latency of a VM that last served the same affinity key.
    public var affinityDiscount: Double
    /// Weights of host CPU load, memory pressure and network load in the cost of a new VM.
    public var cpuWeight: Double
    public var memoryWeight: Double
    public var networkWeight: Double
    /// The host's network capacity, bytes per second, against which its load is measured.
    public var networkCapacityBps: Double
    /// How close to the best suitability (a fraction) a candidate must be to count as a tie.
    public var tieTolerance: Double

    public init(
        predictor: any LatencyPredictor, baseline: (any LatencyPredictor)? = nil, riskAversion: Double = 0.5, affinityDiscount: Double = 0.8,
        cpuWeight: Double = 2, memoryWeight: Double = 4, networkWeight: Double = 1, networkCapacityBps: Double = 125_000_000,
        tieTolerance: Double = 0.03
    ) {
        self.predictor = predictor
        self.baseline = baseline ?? EWMAPredictor()
        self.tieTolerance = tieTolerance
        self.networkWeight = networkWeight
        self.networkCapacityBps = networkCapacityBps
        self.riskAversion = riskAversion
        self.affinityDiscount = affinityDiscount
        self.cpuWeight = cpuWeight
        self.memoryWeight = memoryWeight
    }

    /// Scores one candidate with a given prediction.
    public func score(
        _ candidate: PlacementCandidate, features: PlacementFeatures, prediction: LatencyPrediction, host: HostSample
    ) -> ScoredCandidate {
        var effective = prediction.totalUs + riskAversion * prediction.uncertaintyUs
        if candidate.affinityMatch { effective *= affinityDiscount }
        var resources = 1.0
        if candidate.kind == .provision {
            let memoryShare = host.memoryTotalMB > 0
                ? Double(candidate.profile.memoryMB) / Double(max(host.memoryAvailableMB, 1)) : 0
            let network = min(1, Double(host.networkReceiveBps + host.networkTransmitBps) / max(networkCapacityBps, 1))
            resources += cpuWeight * host.cpuUtilization * host.cpuUtilization
                + memoryWeight * host.memoryPressure + min(memoryShare, 1) + networkWeight * network
        }
        let suitability = 1e6 / (max(effective, 1) * resources)
        return ScoredCandidate(
            candidate: candidate, features: features, prediction: prediction, effectiveLatencyUs: effective,
            resourceFactor: resources, suitability: suitability)
    }

    /// Predicts and scores every candidate, and picks the most suitable; `nil` when there is
    /// none. Candidates within `tieTolerance` of the best count as equal, and the earliest of
    /// them wins: the pool lists its idle VMs most recently used first, so that work stays on
    /// VMs whose caches are hot while the others idle (and age out).
    public func choose(from candidates: [(candidate: PlacementCandidate, features: PlacementFeatures)], host: HostSample) -> PlacementDecision? {
        guard !candidates.isEmpty else { return nil }
        let scored = candidates.map { candidate, features in
            let prediction = predictor.predict(features)
            guard prediction.isFinite else {
                var scored = score(candidate, features: features, prediction: baseline.predict(features), host: host)
                scored.note = "\(predictor.name) prediction not finite: \(baseline.name) used"
                return scored
            }
            return score(candidate, features: features, prediction: prediction, host: host)
        }
        guard let best = scored.map(\.suitability).filter(\.isFinite).max(),
              let winner = scored.firstIndex(where: { $0.suitability.isFinite && $0.suitability >= best * (1 - tieTolerance) })
        else {
            var noted = scored
            noted[0].note = "no finite suitability: the first candidate taken"
            return PlacementDecision(winnerIndex: 0, candidates: noted, baselineUs: baseline.predict(noted[0].features).totalUs)
        }
        return PlacementDecision(winnerIndex: winner, candidates: scored, baselineUs: baseline.predict(scored[winner].features).totalUs)
    }
}

/// The scorer's view of one invocation, as the pool asks for it: it builds each candidate's
/// features (``PlacementFeatures/init(invocation:vm:load:)``, in KilnPredict) and scores them.
public struct InvocationPlacement: PlacementPolicy {
    public let scorer: SuitabilityScorer
    public let invocation: InvocationTraits
    /// The pool's backend, as the model knows it.
    public let backend: String

    public init(scorer: SuitabilityScorer, invocation: InvocationTraits, backend: String) {
        self.scorer = scorer
        self.invocation = invocation
        self.backend = backend
    }

    public func place(
        _ request: PlacementRequest, among candidates: [PlacementCandidate], load: PoolLoad, host: HostSample
    ) -> (chosen: Int, decision: PlacementDecision)? {
        let hostLoad = HostLoad(
            cpu: host.cpuUtilization, memoryPressure: host.memoryPressure, cpuPressure: host.cpuPressure,
            networkBps: Double(host.networkReceiveBps) + Double(host.networkTransmitBps), concurrentExecutions: load.busy,
            queueDepth: load.waiting, idleVMs: load.idle, provisionsInFlight: load.provisioning)
        let described = candidates.map { candidate in
            let past = candidate.kind == .provision
                ? nil : CandidateVM.Past(lastMethod: candidate.lastMethod, uses: candidate.uses, loadedDependencies: candidate.loadedDependencies)
            let vm = CandidateVM(
                profile: candidate.profile.name, vcpus: candidate.profile.vcpus, memoryMB: candidate.profile.memoryMB, backend: backend, past: past)
            return (candidate: candidate, features: PlacementFeatures(invocation: invocation, vm: vm, load: hostLoad))
        }
        return scorer.choose(from: described, host: host).map { ($0.winnerIndex, $0) }
    }
}

extension LatencyPrediction {
    /// Whether every figure is a finite number.
    var isFinite: Bool { provisionUs.isFinite && execUs.isFinite && uncertaintyUs.isFinite }
}

extension InvocationPlacement {
    /// The decision for this invocation when it rides at `position` of a batch on the VM `vm`
    /// that `leader` chose: that VM alone, warm for the method after the calls before it, scored
    /// on this invocation's own features, so that its prediction (and what the model learns from
    /// its time) is its own.
    public func riding(_ leader: PlacementDecision, vm: String, position: Int) -> PlacementDecision {
        let led = leader.winner
        var candidate = led.candidate
        candidate.kind = .idle(vm: vm)
        candidate.lastMethod = invocation.method
        candidate.uses += position
        candidate.loadedDependencies.formUnion(invocation.dependencies.names)
        let past = CandidateVM.Past(lastMethod: invocation.method, uses: candidate.uses, loadedDependencies: candidate.loadedDependencies)
        let vmFeatures = CandidateVM(
            profile: candidate.profile.name, vcpus: candidate.profile.vcpus, memoryMB: candidate.profile.memoryMB, backend: backend, past: past)
        let seen = led.features
        let load = HostLoad(
            cpu: seen.hostCPU, memoryPressure: seen.memoryPressure, cpuPressure: seen.cpuPressure, networkBps: seen.networkBps,
            concurrentExecutions: seen.concurrentExecutions, queueDepth: seen.queueDepth, idleVMs: seen.idleVMs,
            provisionsInFlight: seen.provisionsInFlight)
        // An idle VM's score reads nothing of the host: its resources are already spent.
        let host = HostSample(
            cpuUtilization: seen.hostCPU, cpuCount: 1, memoryTotalMB: 0, memoryAvailableMB: 0, memoryPressure: seen.memoryPressure,
            networkReceiveBps: 0, networkTransmitBps: 0, cpuPressure: seen.cpuPressure)
        let features = PlacementFeatures(invocation: invocation, vm: vmFeatures, load: load)
        return scorer.choose(from: [(candidate: candidate, features: features)], host: host) ?? leader
    }
}
