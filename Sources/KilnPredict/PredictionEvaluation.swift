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
        /// 90th percentile of the absolute percentage error, %.
        public var p90: Double
    }

    /// One predictor's results.
    public struct Report: Sendable {
        public var predictor: String
        public var overall: Errors
        public var byMethod: [String: Errors]
        /// (predicted, actual) per held-out record, µs.
        public var points: [(predicted: Double, actual: Double, method: String)]
    }

    public var trainingShare: Double

    public init(trainingShare: Double = 0.8) {
        self.trainingShare = trainingShare
    }

    /// Evaluates the predictor `make` builds on `records` (successful ones only).
    public func run(_ records: [ExecutionRecord], make: () -> any LatencyPredictor) -> Report {
        let predictor = make()
        let usable = records.filter(\.succeeded)
        let split = Int(Double(usable.count) * trainingShare)
        for record in usable[..<split] { predictor.observe(record.outcome) }
        var points: [(Double, Double, String)] = []
        for record in usable[split...] {
            let outcome = record.outcome
            let prediction = predictor.predict(outcome.features)
            let actual = outcome.execUs + (outcome.features.warmth == .notProvisioned ? outcome.provisionUs : 0)
            points.append((prediction.totalUs, actual, record.method))
            predictor.observe(outcome)
        }
        var byMethod: [String: Errors] = [:]
        for method in Set(points.map(\.2)) {
            byMethod[method] = Self.errors(points.filter { $0.2 == method })
        }
        return Report(predictor: predictor.name, overall: Self.errors(points), byMethod: byMethod,
                      points: points.map { ($0.0, $0.1, $0.2) })
    }

    static func errors(_ points: [(Double, Double, String)]) -> Errors {
        guard !points.isEmpty else { return Errors(count: 0, mae: 0, mape: 0, p90: 0) }
        let absolute = points.map { abs($0.0 - $0.1) }
        let percentage = points.map { abs($0.0 - $0.1) / max($0.1, 1) * 100 }.sorted()
        return Errors(
            count: points.count, mae: absolute.reduce(0, +) / Double(points.count),
            mape: percentage.reduce(0, +) / Double(points.count),
            p90: percentage[min(percentage.count - 1, Int(Double(percentage.count) * 0.9))])
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
