import KilnPool
import KilnPredict

/// Scores candidates: predicted latency (provision + exec, with its uncertainty; the model knows
/// how warm each VM is for the method), the affinity key, and what each takes from the host. An
/// idle VM's resources are already spent; a new VM costs memory, CPU and network headroom, more
/// so on a loaded host, so that a busy host prefers to wait briefly for a warm VM rather than
/// start another.
public struct SuitabilityScorer: Sendable {
    /// The latency model.
    public var predictor: any LatencyPredictor
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
        predictor: any LatencyPredictor, riskAversion: Double = 0.5, affinityDiscount: Double = 0.8,
        cpuWeight: Double = 2, memoryWeight: Double = 4, networkWeight: Double = 1, networkCapacityBps: Double = 125_000_000,
        tieTolerance: Double = 0.03
    ) {
        self.predictor = predictor
        self.tieTolerance = tieTolerance
        self.networkWeight = networkWeight
        self.networkCapacityBps = networkCapacityBps
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
            let network = min(1, Double(host.networkReceiveBps + host.networkTransmitBps) / max(networkCapacityBps, 1))
            resources += cpuWeight * host.cpuUtilization * host.cpuUtilization
                + memoryWeight * host.memoryPressure + min(memoryShare, 1) + networkWeight * network
        }
        let suitability = 1e6 / (max(effective, 1) * resources)
        return ScoredCandidate(
            candidate: candidate, prediction: prediction, effectiveLatencyUs: effective, resourceFactor: resources,
            suitability: suitability)
    }

    /// Scores every candidate and picks the most suitable; `nil` when there is none. Candidates
    /// within `tieTolerance` of the best count as equal, and the earliest of them wins: the pool
    /// lists its idle VMs most recently used first, so that work stays on VMs whose caches are
    /// hot while the others idle (and age out).
    public func choose(from candidates: [PlacementCandidate], host: HostSample) -> PlacementDecision? {
        let scored = candidates.map { score($0, prediction: predictor.predict($0.features), host: host) }
        guard let best = scored.map(\.suitability).filter(\.isFinite).max(),
              let winner = scored.first(where: { $0.suitability.isFinite && $0.suitability >= best * (1 - tieTolerance) })
        else { return scored.first.map { PlacementDecision(winner: $0, candidates: scored) } }
        return PlacementDecision(winner: winner, candidates: scored)
    }
}

extension SuitabilityScorer: PlacementPolicy {
    public func place(_ request: PlacementRequest, among candidates: [PlacementCandidate], host: HostSample) -> PlacementDecision? {
        choose(from: candidates, host: host)
    }
}
