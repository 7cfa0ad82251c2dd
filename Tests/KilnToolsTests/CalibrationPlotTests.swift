import KilnPredict
import KilnTools
import Testing

/// The calibration plot draws one dot per evaluated record and predictor, and names each
/// predictor with its error.
@Suite("Calibration plot")
struct CalibrationPlotTests {
    @Test func oneDotPerRecordAndPredictorAndALegendEach() {
        let records = (0..<50).map { index -> ExecutionRecord in
            let outcome = ExecutionOutcome(
                features: PlacementFeatures(method: "sleep", numericArgs: ["ms": Double(index % 5)], profile: "small",
                                            backend: "qemu", warmth: .warmForMethod),
                provisionUs: 0, execUs: Double(index % 5) * 1_000 + 500, succeeded: true)
            return ExecutionRecord(invocationID: "\(index)", recordedAtUs: UInt64(index), outcome: outcome)
        }
        let evaluation = PredictionEvaluation(trainingShare: 0.6)
        let learned = evaluation.run(records) { LearnedPredictor() }
        let average = evaluation.run(records) { EWMAPredictor() }
        let svg = CalibrationPlot.svg([learned, average], title: "held out")
        let dots = svg.matches(of: #/<circle /#).count
        #expect(dots == learned.points.count + average.points.count && dots == 40, "\(dots) dots")
        #expect(svg.contains("\(learned.predictor): MAPE") && svg.contains("\(average.predictor): MAPE"))
        #expect(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>\n"))
    }
}
