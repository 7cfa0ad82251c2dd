/// Online linear regression by recursive least squares, with exponential forgetting so that it
/// follows a drifting host. O(d²) per update, no stored samples: cheap enough to update on every
/// invocation and to ask for every candidate of every placement.
public struct RecursiveLeastSquares: Sendable, Equatable {
    public let dimension: Int
    /// Weight of the past per update, (0, 1]; 1 never forgets.
    public let forgetting: Double
    public private(set) var weights: [Double]
    /// The inverse correlation matrix, row-major.
    private var covariance: [Double]
    public private(set) var updates = 0

    /// Creates a model of `dimension` features.
    /// - Parameters:
    ///   - dimension: Features per sample.
    ///   - forgetting: Weight of the past per update.
    ///   - prior: The initial covariance scale: large means little confidence in the zero start.
    public init(dimension: Int, forgetting: Double = 0.995, prior: Double = 1_000) {
        self.dimension = dimension
        self.forgetting = forgetting
        self.weights = Array(repeating: 0, count: dimension)
        var identity = Array(repeating: 0.0, count: dimension * dimension)
        for index in 0..<dimension { identity[index * dimension + index] = prior }
        self.covariance = identity
    }

    /// The prediction for `features`.
    public func predict(_ features: [Double]) -> Double {
        var sum = 0.0
        for index in 0..<dimension { sum += weights[index] * features[index] }
        return sum
    }

    /// Learns `target` for `features`; returns the error of the prediction made before.
    @discardableResult
    public mutating func update(_ features: [Double], target: Double) -> Double {
        let d = dimension
        // p = P x
        var p = Array(repeating: 0.0, count: d)
        for row in 0..<d {
            var sum = 0.0
            for column in 0..<d { sum += covariance[row * d + column] * features[column] }
            p[row] = sum
        }
        var denominator = forgetting
        for index in 0..<d { denominator += features[index] * p[index] }
        guard denominator.isFinite, denominator > 1e-12 else { return 0 }
        let error = target - predict(features)
        // k = p / denominator;  w += k e;  P = (P - k pᵀ) / λ   (P is symmetric, so xᵀP = pᵀ)
        for index in 0..<d { weights[index] += p[index] / denominator * error }
        for row in 0..<d {
            let gain = p[row] / denominator
            for column in 0..<d {
                covariance[row * d + column] = (covariance[row * d + column] - gain * p[column]) / forgetting
            }
        }
        updates += 1
        return error
    }
}
