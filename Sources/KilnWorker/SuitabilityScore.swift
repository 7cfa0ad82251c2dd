import KilnPool
import KilnPredict

/// Somewhere an invocation could run: an idle VM of the pool, or a VM provisioned for it.
public struct PlacementCandidate: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// An idle VM, by id.
        case idle(vm: String)
        /// A VM provisioned now, for this invocation.
        case provision
    }

    public var kind: Kind
    public var profile: String
    public var features: PlacementFeatures
    /// Whether the VM last served the invocation's affinity key.
    public var affinityMatch: Bool

    public init(kind: Kind, profile: String, features: PlacementFeatures, affinityMatch: Bool = false) {
        self.kind = kind
        self.profile = profile
        self.features = features
        self.affinityMatch = affinityMatch
    }
}

/// A candidate with its prediction and score.
public struct ScoredCandidate: Sendable, Equatable {
    public var candidate: PlacementCandidate
    public var prediction: LatencyPrediction
    /// Predicted latency plus `riskAversion` standard deviations, less the affinity bonus, µs.
    public var effectiveLatencyUs: Double
    /// What the candidate costs the host, ≥ 1: 1 for an idle VM, more for a new one on a
    /// loaded host.
    public var resourceFactor: Double
    /// Higher is better: the rate (per second) at which this candidate would complete the
    /// invocation, discounted by the resources it takes.
    public var suitability: Double
}

/// The choice, with every candidate considered: enough to explain it afterwards.
public struct PlacementDecision: Sendable, Equatable {
    public var winner: ScoredCandidate
    public var candidates: [ScoredCandidate]

    /// One line per candidate, best first.
    public var explanation: [String] {
        candidates.sorted { $0.suitability > $1.suitability }.map { scored in
            let place: String
            switch scored.candidate.kind {
            case .idle(let vm): place = "idle \(vm) (\(scored.candidate.features.warmth.rawValue))"
            case .provision: place = "new \(scored.candidate.profile) VM"
            }
            return String(
                format: "%@: predicted %.0f µs (+%.0f µs provision, ±%.0f), resources x%.2f%@, suitability %.2f",
                place, scored.prediction.totalUs, scored.prediction.provisionUs, scored.prediction.uncertaintyUs,
                scored.resourceFactor, scored.candidate.affinityMatch ? ", affinity" : "", scored.suitability)
        }
    }
}

/// Scores candidates: predicted latency (provision + exec, with its uncertainty) combined with
/// what each takes from the host. An idle VM's resources are already spent; a new VM costs
/// memory and CPU, more so on a loaded host, so that a busy host prefers to wait briefly for a
/// warm VM rather than start another.
public struct SuitabilityScorer: Sendable {
    /// Standard deviations of predicted latency added, to prefer the predictable.
    public var riskAversion: Double
    /// Factor on the effective latency of a VM that last served the same affinity key.
    public var affinityDiscount: Double
    /// Weights of host CPU load and memory pressure in the cost of a new VM.
    public var cpuWeight: Double
    public var memoryWeight: Double

    public init(riskAversion: Double = 0.5, affinityDiscount: Double = 0.8, cpuWeight: Double = 2, memoryWeight: Double = 4) {
        self.riskAversion = riskAversion
        self.affinityDiscount = affinityDiscount
        self.cpuWeight = cpuWeight
        self.memoryWeight = memoryWeight
    }

    /// Scores one candidate.
    public func score(_ candidate: PlacementCandidate, prediction: LatencyPrediction, host: HostSample) -> ScoredCandidate {
        var effective = prediction.totalUs + riskAversion * prediction.uncertaintyUs
        if candidate.affinityMatch { effective *= affinityDiscount }
        var resources = 1.0
        if candidate.kind == .provision {
            let memoryShare = host.memoryTotalMB > 0
                ? Double(candidate.features.memoryMB) / Double(max(host.memoryAvailableMB, 1)) : 0
            resources += cpuWeight * host.cpuUtilization * host.cpuUtilization
                + memoryWeight * host.memoryPressure + min(memoryShare, 1)
        }
        let suitability = 1e6 / (max(effective, 1) * resources)
        return ScoredCandidate(
            candidate: candidate, prediction: prediction, effectiveLatencyUs: effective, resourceFactor: resources,
            suitability: suitability)
    }

    /// Scores every candidate and picks the most suitable; `nil` when there is none.
    public func choose(
        from candidates: [PlacementCandidate], predictor: any LatencyPredictor, host: HostSample
    ) -> PlacementDecision? {
        let scored = candidates.map { score($0, prediction: predictor.predict($0.features), host: host) }
        guard let winner = scored.max(by: { $0.suitability < $1.suitability }) else { return nil }
        return PlacementDecision(winner: winner, candidates: scored)
    }
}
