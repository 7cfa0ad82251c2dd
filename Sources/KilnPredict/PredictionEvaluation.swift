import Foundation

/// Replays a history through predictors and measures their error on a held-out part.
///
/// Every predictor learns the first `trainingShare` of the records in order; on the rest, each
/// record is predicted first and learned afterwards, as in production (a worker predicts, runs,
/// then learns). Errors are of exec time (warm placements) and of provision + exec (cold ones).
public struct PredictionEvaluation: Sendable {
    /// Error figures for one method (or all).
    public struct Errors: Sendable, Equatable {
        public var count: Int
        /// Mean absolute error, µs.
        public var mae: Double
        /// Mean absolute percentage error, %.
        public var mape: Double
        /// Median absolute percentage error, %.
        public var medianAPE: Double
        /// 90th percentile of the absolute percentage error, %.
        public var p90: Double
        /// Share of predictions within a factor of two of the truth, 0…1.
        public var withinTwice: Double
        /// The largest factor between a prediction and the truth, either way.
        public var worstRatio: Double

        /// The figures of `points`.
        public init(_ points: [Point]) {
            count = points.count
            guard !points.isEmpty else {
                (mae, mape, medianAPE, p90, withinTwice, worstRatio) = (0, 0, 0, 0, 0, 0)
                return
            }
            let percentage = points.map { abs($0.predicted - $0.actual) / max($0.actual, 1) * 100 }.sorted()
            let ratios = points.map { max($0.predicted, 1) / max($0.actual, 1) }
            mae = points.reduce(0) { $0 + abs($1.predicted - $1.actual) } / Double(points.count)
            mape = percentage.reduce(0, +) / Double(points.count)
            medianAPE = percentage.count.isMultiple(of: 2)
                ? (percentage[percentage.count / 2 - 1] + percentage[percentage.count / 2]) / 2 : percentage[percentage.count / 2]
            p90 = percentage[min(percentage.count - 1, Int(Double(percentage.count) * 0.9))]
            withinTwice = Double(ratios.filter { $0 <= 2 && $0 >= 0.5 }.count) / Double(points.count)
            worstRatio = ratios.map { max($0, 1 / $0) }.max() ?? 1
        }
    }

    /// One prediction and what happened, µs.
    public struct Point: Sendable, Equatable {
        public var predicted: Double
        public var actual: Double
        public var method: String

        public init(predicted: Double, actual: Double, method: String) {
            self.predicted = predicted
            self.actual = actual
            self.method = method
        }
    }

    /// One predictor's results.
    public struct Report: Sendable {
        public var predictor: String
        public var overall: Errors
        public var byMethod: [String: Errors]
        public var points: [Point]

        /// The figures of `points`, overall and per method.
        public init(predictor: String, points: [Point]) {
            self.predictor = predictor
            self.points = points
            overall = Errors(points)
            byMethod = Dictionary(grouping: points, by: \.method).mapValues(Errors.init)
        }
    }

    public var trainingShare: Double

    public init(trainingShare: Double = 0.8) {
        self.trainingShare = trainingShare
    }

    /// Evaluates the predictor `make` builds on the usable `records` (successful ones of the
    /// current feature schema, see ``HistoryReplay``).
    public func run(_ records: [ExecutionRecord], make: () -> any LatencyPredictor) -> Report {
        let predictor = make()
        let usable = HistoryReplay.usable(records).records.filter(\.succeeded)
        let split = Int(Double(usable.count) * trainingShare)
        for record in usable[..<split] { predictor.observe(record.outcome) }
        var points: [Point] = []
        for record in usable[split...] {
            let outcome = record.outcome
            let prediction = predictor.predict(outcome.features)
            let actual = outcome.execUs + (outcome.features.warmth == .notProvisioned ? outcome.provisionUs : 0)
            points.append(Point(predicted: prediction.totalUs, actual: actual, method: record.method))
            predictor.observe(outcome)
        }
        return Report(predictor: predictor.name, points: points)
    }
}
