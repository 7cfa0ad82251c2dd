import KilnPool
import KilnPredict

/// A candidate with its features, prediction and score.
public struct ScoredCandidate: Sendable, Equatable {
    public var candidate: PlacementCandidate
    /// What the model was asked about.
    public var features: PlacementFeatures
    public var prediction: LatencyPrediction
    /// Predicted latency plus a share of its uncertainty, less any affinity discount, µs.
    public var effectiveLatencyUs: Double
    /// What the candidate costs the host, ≥ 1: 1 for an idle VM, more for a new one on a
    /// loaded host.
    public var resourceFactor: Double
    /// Higher is better.
    public var suitability: Double
    /// Set when the score is not the model's own (a fallback), saying why.
    public var note: String?

    public init(
        candidate: PlacementCandidate, features: PlacementFeatures, prediction: LatencyPrediction, effectiveLatencyUs: Double,
        resourceFactor: Double, suitability: Double, note: String? = nil
    ) {
        self.candidate = candidate
        self.features = features
        self.prediction = prediction
        self.effectiveLatencyUs = effectiveLatencyUs
        self.resourceFactor = resourceFactor
        self.suitability = suitability
        self.note = note
    }
}

/// The choice, with every candidate considered: enough to explain it afterwards.
public struct PlacementDecision: Sendable, Equatable {
    /// The chosen candidate's index in ``candidates``.
    public var winnerIndex: Int
    /// Every candidate, in the order the pool listed them.
    public var candidates: [ScoredCandidate]
    /// What the baseline predicted for the winner at the same moment, µs (the history keeps it,
    /// so that the model and the baseline are scored on the same invocations).
    public var baselineUs: Double?

    public init(winnerIndex: Int, candidates: [ScoredCandidate], baselineUs: Double? = nil) {
        self.winnerIndex = winnerIndex
        self.candidates = candidates
        self.baselineUs = baselineUs
    }

    public var winner: ScoredCandidate { candidates[winnerIndex] }

    /// One line per candidate, best first.
    public var explanation: [String] {
        candidates.sorted { ($0.suitability.isFinite ? $0.suitability : -1) > ($1.suitability.isFinite ? $1.suitability : -1) }.map { scored in
            let place: String
            switch scored.candidate.kind {
            case .idle(let vm): place = "idle \(vm) (\(scored.features.warmth.rawValue))"
            case .provision: place = "new \(scored.candidate.profile.name) VM"
            }
            // Interpolation, not String(format:): this runs for every invocation, and Foundation's
            // formatting made it 60 µs for nine candidates.
            return "\(place): predicted \(Self.rounded(scored.prediction.totalUs)) µs "
                + "(+\(Self.rounded(scored.prediction.provisionUs)) µs provision, ±\(Self.rounded(scored.prediction.uncertaintyUs))), "
                + "resources x\(Self.twoDecimals(scored.resourceFactor))\(scored.candidate.affinityMatch ? ", affinity" : ""), "
                + "suitability \(Self.twoDecimals(scored.suitability))" + (scored.note.map { " (\($0))" } ?? "")
        }
    }

    private static func rounded(_ value: Double) -> String {
        value.isFinite && abs(value) < 9e18 ? String(Int64(value.rounded())) : "\(value)"
    }

    /// `value` with two decimals, as `%.2f` writes it.
    private static func twoDecimals(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 1e15 else { return "\(value)" }
        let hundredths = Int64((abs(value) * 100).rounded())
        let fraction = hundredths % 100
        return (value < 0 && hundredths != 0 ? "-" : "") + "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction)"
    }
}
