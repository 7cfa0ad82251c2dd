import Synchronization

/// The latency model's live error per method: an exponentially weighted mean of
/// |predicted − measured| / measured over the method's recent invocations, which
/// `kiln_model_error_ratio{method}` exports (0.25: predictions are off by a quarter on average).
///
/// A mean of ratios rather than of microseconds, so that one alert threshold fits a 1 ms method
/// and a 10 s one; weighted towards the latest runs (`weight` 0.05: about the last 20 matter
/// most), so that it drifts when the model does.
final class PredictionError: Sendable {
    /// The share of the newest observation in the mean.
    let weight: Double
    private let ratios = Mutex<[String: Double]>([:])

    init(weight: Double = 0.05) {
        self.weight = weight
    }

    /// Folds one run into `method`'s mean and returns the new mean; nil (nothing folded) when
    /// the measured time is not positive or either figure is not finite.
    func observe(method: String, predictedUs: Double, measuredUs: Double) -> Double? {
        guard predictedUs.isFinite, measuredUs.isFinite, predictedUs >= 0, measuredUs > 0 else { return nil }
        // Capped: one run a thousand times off must not hide the model's recovery for long.
        let ratio = min(abs(predictedUs - measuredUs) / measuredUs, 10)
        return ratios.withLock { ratios in
            let mean = ratios[method].map { $0 + weight * (ratio - $0) } ?? ratio
            ratios[method] = mean
            return mean
        }
    }
}
