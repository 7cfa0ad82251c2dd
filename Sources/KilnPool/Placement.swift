import KilnPredict

/// What the scheduler is placing: one invocation of a method.
public struct PlacementRequest: Sendable, Equatable {
    public var invocationID: String
    public var method: String
    /// The VM profile the method runs in.
    public var profile: String
    public var argsBytes: Int
    /// The numbers in the invocation's args (see ``PlacementFeatures/numericArgs``).
    public var numericArgs: [String: Double]
    /// The invocation's affinity key, if any.
    public var affinityKey: String?

    public init(
        invocationID: String, method: String, profile: String, argsBytes: Int = 0, numericArgs: [String: Double] = [:],
        affinityKey: String? = nil
    ) {
        self.invocationID = invocationID
        self.method = method
        self.profile = profile
        self.argsBytes = argsBytes
        self.numericArgs = numericArgs
        self.affinityKey = affinityKey
    }
}

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
    /// Predicted latency plus a share of its uncertainty, less any affinity discount, µs.
    public var effectiveLatencyUs: Double
    /// What the candidate costs the host, ≥ 1: 1 for an idle VM, more for a new one on a
    /// loaded host.
    public var resourceFactor: Double
    /// Higher is better.
    public var suitability: Double

    public init(
        candidate: PlacementCandidate, prediction: LatencyPrediction, effectiveLatencyUs: Double,
        resourceFactor: Double, suitability: Double
    ) {
        self.candidate = candidate
        self.prediction = prediction
        self.effectiveLatencyUs = effectiveLatencyUs
        self.resourceFactor = resourceFactor
        self.suitability = suitability
    }
}

/// The choice, with every candidate considered: enough to explain it afterwards.
public struct PlacementDecision: Sendable, Equatable {
    public var winner: ScoredCandidate
    public var candidates: [ScoredCandidate]

    public init(winner: ScoredCandidate, candidates: [ScoredCandidate]) {
        self.winner = winner
        self.candidates = candidates
    }

    /// One line per candidate, best first.
    public var explanation: [String] {
        candidates.sorted { $0.suitability > $1.suitability }.map { scored in
            let place: String
            switch scored.candidate.kind {
            case .idle(let vm): place = "idle \(vm) (\(scored.candidate.features.warmth.rawValue))"
            case .provision: place = "new \(scored.candidate.profile) VM"
            }
            // Interpolation, not String(format:): this runs for every invocation, and Foundation's
            // formatting made it 60 µs for nine candidates.
            return "\(place): predicted \(Self.rounded(scored.prediction.totalUs)) µs "
                + "(+\(Self.rounded(scored.prediction.provisionUs)) µs provision, ±\(Self.rounded(scored.prediction.uncertaintyUs))), "
                + "resources x\(Self.twoDecimals(scored.resourceFactor))\(scored.candidate.affinityMatch ? ", affinity" : ""), "
                + "suitability \(Self.twoDecimals(scored.suitability))"
        }
    }

    private static func rounded(_ value: Double) -> String {
        value.isFinite ? String(Int64(value.rounded())) : "\(value)"
    }

    /// `value` with two decimals, as `%.2f` writes it.
    private static func twoDecimals(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 1e15 else { return "\(value)" }
        let hundredths = Int64((abs(value) * 100).rounded())
        let fraction = hundredths % 100
        return (value < 0 && hundredths != 0 ? "-" : "") + "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction)"
    }
}

/// Chooses among the candidates for an invocation. The pool builds the candidates (its idle
/// VMs of the profile, and a new VM when the host has room); the policy scores them.
public protocol PlacementPolicy: Sendable {
    /// The choice among `candidates`, or `nil` to wait for a VM to come free.
    /// - Parameters:
    ///   - request: What is being placed.
    ///   - candidates: Idle VMs of the profile, and `.provision` when a new VM fits.
    ///   - host: The latest host sample.
    func place(_ request: PlacementRequest, among candidates: [PlacementCandidate], host: HostSample) -> PlacementDecision?
}
