import Foundation
import KilnPredict

/// Predicted against actual on log axes, one dot per held-out record and predictor, with the
/// line where they are equal: an SVG any browser shows.
public enum CalibrationPlot {
    /// The plot of `reports` (one colour each, up to four), titled `title`, as an SVG document.
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
