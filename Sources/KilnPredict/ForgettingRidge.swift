/// Online ridge regression with exponential forgetting, refitted after every sample from its
/// sufficient statistics (the weighted sums of the features, of their products and of the
/// target). Nothing drifts: the statistics are sums, symmetric by construction and bounded by
/// the forgetting, and each fit solves the standardised normal equations afresh.
///
/// Each fit standardises the columns, drops those that stayed constant and those that are
/// linear combinations of earlier ones (an ordered Cholesky factorisation of their correlation
/// matrix finds them), and solves the ridge system on the rest. An update whose sample or fit
/// is not finite is refused and leaves the model as it was. The range of every column seen in
/// training is kept, so that a caller can clip inputs to it rather than extrapolate.
///
/// O(d²) per sample for the statistics and O(d³) for the fit: a few microseconds for the 20 or
/// so columns of a latency model.
public struct ForgettingRidge: Sendable, Equatable {
    /// The solved model: `prediction = intercept + Σ coefficients[j] · x[j]`.
    public struct Fit: Sendable, Equatable {
        public var intercept: Double
        /// Zero for the columns left out.
        public var coefficients: [Double]
        /// The columns the fit uses: varied, and not a combination of earlier columns.
        public var active: [Bool]

        public var activeCount: Int { active.reduce(0) { $0 + ($1 ? 1 : 0) } }
    }

    public let dimension: Int
    /// Weight of the past per sample, (0, 1].
    public let forgetting: Double
    /// The ridge penalty, in units of the standardised columns' variance.
    public let ridge: Double
    /// The samples learned (refused ones not counted).
    public private(set) var samples = 0
    /// The smallest and largest value each column has had.
    public private(set) var low: [Double]
    public private(set) var high: [Double]
    public private(set) var fit: Fit

    private var weight = 0.0
    private var sumX: [Double]
    /// Σ w·x·xᵀ, row-major; only the upper triangle is accumulated and read.
    private var sumXX: [Double]
    private var sumY = 0.0
    private var sumXY: [Double]

    /// Columns whose variance is below this share of their squared mean (plus an absolute
    /// floor) count as constant.
    static let constantVariance = 1e-10
    /// A column whose share of variance not explained by the earlier columns is below this is
    /// a combination of them.
    static let collinearResidual = 1e-7

    /// - Parameters:
    ///   - dimension: Columns per sample.
    ///   - forgetting: Weight of the past per sample: 0.995 halves it in about 140 samples.
    ///   - ridge: The penalty on standardised coefficients.
    public init(dimension: Int, forgetting: Double = 0.995, ridge: Double = 0.01) {
        self.dimension = dimension
        self.forgetting = min(max(forgetting, 0.5), 1)
        self.ridge = max(ridge, 1e-9)
        low = Array(repeating: .infinity, count: dimension)
        high = Array(repeating: -.infinity, count: dimension)
        sumX = Array(repeating: 0, count: dimension)
        sumXX = Array(repeating: 0, count: dimension * dimension)
        sumXY = Array(repeating: 0, count: dimension)
        fit = Fit(intercept: 0, coefficients: Array(repeating: 0, count: dimension), active: Array(repeating: false, count: dimension))
    }

    /// The prediction of the current fit for `features`, as they are (see ``clip(_:)``).
    public func predict(_ features: [Double]) -> Double {
        var sum = fit.intercept
        for index in 0..<dimension where fit.active[index] { sum += fit.coefficients[index] * features[index] }
        return sum
    }

    /// `features` with each column the fit uses held to the range it had in training, and how
    /// far outside that range the farthest column was, in widths of its range (0 inside).
    public func clip(_ features: [Double]) -> (features: [Double], outside: Double) {
        var clipped = features
        var outside = 0.0
        for index in 0..<dimension where fit.active[index] {
            let value = features[index]
            let width = max(high[index] - low[index], 1e-12)
            if value > high[index] {
                outside = max(outside, (value - high[index]) / width)
                clipped[index] = high[index]
            } else if value < low[index] {
                outside = max(outside, (low[index] - value) / width)
                clipped[index] = low[index]
            }
        }
        return (clipped, outside)
    }

    /// Learns `target` for `features` and refits. Returns `false`, and changes nothing, when
    /// the sample or the fit it leads to is not finite.
    /// - Parameter weight: The sample's weight, (0, 1]: less than 1 for an outlier, so that a
    ///   few wild samples do not drag the fit (a Huber loss, applied online).
    @discardableResult
    public mutating func add(_ features: [Double], target: Double, weight sampleWeight: Double = 1) -> Bool {
        guard features.count == dimension, target.isFinite, features.allSatisfy(\.isFinite), sampleWeight.isFinite, sampleWeight > 0
        else { return false }
        var next = self
        next.accumulate(features, target: target, weight: min(sampleWeight, 1))
        guard next.statisticsAreFinite, let fit = next.solve() else { return false }
        next.fit = fit
        next.samples += 1
        self = next
        return true
    }

    private mutating func accumulate(_ x: [Double], target y: Double, weight w: Double) {
        let d = dimension
        let lambda = forgetting
        weight = lambda * weight + w
        sumY = lambda * sumY + w * y
        for row in 0..<d {
            sumX[row] = lambda * sumX[row] + w * x[row]
            sumXY[row] = lambda * sumXY[row] + w * x[row] * y
            for column in row..<d {
                sumXX[row * d + column] = lambda * sumXX[row * d + column] + w * x[row] * x[column]
            }
            low[row] = min(low[row], x[row])
            high[row] = max(high[row], x[row])
        }
    }

    private var statisticsAreFinite: Bool {
        weight.isFinite && sumY.isFinite && sumX.allSatisfy(\.isFinite) && sumXY.allSatisfy(\.isFinite) && sumXX.allSatisfy(\.isFinite)
    }

    /// Solves the standardised ridge system on the columns that carry information.
    private func solve() -> Fit? {
        let d = dimension
        guard weight > 0 else { return nil }
        let meanY = sumY / weight
        var mean = [Double](repeating: 0, count: d)
        var deviation = [Double](repeating: 0, count: d)
        var candidates: [Int] = []
        for index in 0..<d {
            mean[index] = sumX[index] / weight
            let variance = sumXX[index * d + index] / weight - mean[index] * mean[index]
            if variance > Self.constantVariance * (1 + mean[index] * mean[index]) {
                deviation[index] = variance.squareRoot()
                candidates.append(index)
            }
        }
        func correlation(_ a: Int, _ b: Int) -> Double {
            let (row, column) = a <= b ? (a, b) : (b, a)
            return (sumXX[row * d + column] / weight - mean[a] * mean[b]) / (deviation[a] * deviation[b])
        }
        // Ordered Cholesky of the correlation matrix: a column that earlier ones explain is left out.
        var kept: [Int] = []
        var factor: [[Double]] = []
        for index in candidates {
            var row = [Double](repeating: 0, count: kept.count + 1)
            var residual = correlation(index, index)
            for (position, other) in kept.enumerated() {
                var value = correlation(index, other)
                for earlier in 0..<position { value -= row[earlier] * factor[position][earlier] }
                value /= factor[position][position]
                row[position] = value
                residual -= value * value
            }
            guard residual > Self.collinearResidual else { continue }
            row[kept.count] = residual.squareRoot()
            kept.append(index)
            factor.append(row)
        }
        // Ridge on what is left: (R + ridge·I) β = r, by Cholesky again (positive definite now).
        let n = kept.count
        var system = [Double](repeating: 0, count: n * n)
        var right = [Double](repeating: 0, count: n)
        for (i, a) in kept.enumerated() {
            right[i] = (sumXY[a] / weight - mean[a] * meanY) / deviation[a]
            for (j, b) in kept.enumerated() where j >= i {
                let value = correlation(a, b) + (i == j ? ridge : 0)
                system[i * n + j] = value
                system[j * n + i] = value
            }
        }
        guard let beta = Self.choleskySolve(system, right, size: n) else { return nil }
        var coefficients = [Double](repeating: 0, count: d)
        var active = [Bool](repeating: false, count: d)
        var intercept = meanY
        for (i, index) in kept.enumerated() {
            coefficients[index] = beta[i] / deviation[index]
            active[index] = true
            intercept -= coefficients[index] * mean[index]
        }
        guard intercept.isFinite, coefficients.allSatisfy(\.isFinite) else { return nil }
        return Fit(intercept: intercept, coefficients: coefficients, active: active)
    }

    /// Solves `matrix · x = right` for a symmetric positive definite `matrix` (row-major).
    static func choleskySolve(_ matrix: [Double], _ right: [Double], size n: Int) -> [Double]? {
        var lower = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = matrix[i * n + j]
                for k in 0..<j { sum -= lower[i * n + k] * lower[j * n + k] }
                if i == j {
                    guard sum > 0, sum.isFinite else { return nil }
                    lower[i * n + i] = sum.squareRoot()
                } else {
                    lower[i * n + j] = sum / lower[j * n + j]
                }
            }
        }
        var y = right
        for i in 0..<n {
            for k in 0..<i { y[i] -= lower[i * n + k] * y[k] }
            y[i] /= lower[i * n + i]
        }
        for i in stride(from: n - 1, through: 0, by: -1) {
            for k in (i + 1)..<n { y[i] -= lower[k * n + i] * y[k] }
            y[i] /= lower[i * n + i]
        }
        return y.allSatisfy(\.isFinite) ? y : nil
    }
}
