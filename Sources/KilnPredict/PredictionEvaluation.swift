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

/// Predicted against actual on log axes, one dot per held-out record and predictor, with the
/// line where they are equal: an SVG any browser shows.
public enum CalibrationPlot {
    public static func svg(_ reports: [PredictionEvaluation.Report], title: String) -> String {
        let size = 640.0
        let margin = 60.0
        let values = reports.flatMap { $0.points.flatMap { [$0.predicted, $0.actual] } }.filter { $0 > 0 }
        let low = log10(max(values.min() ?? 1, 1))
        let high = log10(max(values.max() ?? 10, 10))
        let lower = floor(low)
        let upper = max(ceil(high), lower + 1)
        func scale(_ value: Double) -> Double {
            (log10(max(value, 1)) - lower) / (upper - lower) * (size - 2 * margin)
        }
        let colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(size))" height="\(Int(size))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(size / 2)" y="20" text-anchor="middle" font-size="14">\(title)</text>
        <line x1="\(margin)" y1="\(size - margin)" x2="\(size - margin)" y2="\(margin)" stroke="#999" stroke-dasharray="4 4"/>
        <rect x="\(margin)" y="\(margin)" width="\(size - 2 * margin)" height="\(size - 2 * margin)" fill="none" stroke="black"/>
        <text x="\(size / 2)" y="\(size - 20)" text-anchor="middle">actual latency (log, µs)</text>
        <text x="18" y="\(size / 2)" text-anchor="middle" transform="rotate(-90 18 \(size / 2))">predicted latency (log, µs)</text>

        """
        for decade in Int(lower)...Int(upper) {
            let position = (Double(decade) - lower) / (upper - lower) * (size - 2 * margin)
            svg += "<text x=\"\(margin + position)\" y=\"\(size - margin + 16)\" text-anchor=\"middle\">1e\(decade)</text>\n"
            svg += "<text x=\"\(margin - 6)\" y=\"\(size - margin - position + 4)\" text-anchor=\"end\">1e\(decade)</text>\n"
        }
        for (index, report) in reports.enumerated() {
            let colour = colours[index % colours.count]
            for point in report.points {
                let x = margin + scale(point.actual)
                let y = size - margin - scale(point.predicted)
                svg += "<circle cx=\"\(String(format: "%.1f", x))\" cy=\"\(String(format: "%.1f", y))\" r=\"2\" fill=\"\(colour)\" fill-opacity=\"0.45\"/>\n"
            }
            svg += "<text x=\"\(margin + 10)\" y=\"\(margin + 18 + Double(index) * 16)\" fill=\"\(colour)\">\(report.predictor): MAPE \(String(format: "%.1f", report.overall.mape))%</text>\n"
        }
        return svg + "</svg>\n"
    }
}
