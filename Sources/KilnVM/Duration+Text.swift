extension Duration {
    /// The duration as a person reads it: `850 µs`, `4.2 ms`, `310 ms`, `38.5 s`, `2 min 5 s`,
    /// `1 h 12 min` (not Swift's `38.506682256999994 seconds`). For logs, errors and CLI output.
    public var text: String {
        let (seconds, attoseconds) = components
        guard seconds >= 0, attoseconds >= 0 else { return "-" + (Duration.zero - self).text }
        let microseconds = Double(seconds) * 1e6 + Double(attoseconds) / 1e12
        switch microseconds {
        case ..<1_000: return "\(Int(microseconds.rounded())) µs"
        case ..<10_000: return "\(Self.oneDecimal(microseconds / 1_000)) ms"
        case ..<1_000_000: return "\(Int((microseconds / 1_000).rounded())) ms"
        case ..<60_000_000: return "\(Self.oneDecimal(microseconds / 1e6)) s"
        case ..<3_600_000_000:
            let whole = Int64((microseconds / 1e6).rounded())
            return whole % 60 == 0 ? "\(whole / 60) min" : "\(whole / 60) min \(whole % 60) s"
        default:
            let minutes = Int64((microseconds / 6e7).rounded())
            return minutes % 60 == 0 ? "\(minutes / 60) h" : "\(minutes / 60) h \(minutes % 60) min"
        }
    }

    /// `value` with one decimal, the decimal dropped when it is 0 (`4.2`, `38.5`, `12`).
    private static func oneDecimal(_ value: Double) -> String {
        let tenths = Int64((value * 10).rounded())
        return tenths % 10 == 0 ? "\(tenths / 10)" : "\(tenths / 10).\(tenths % 10)"
    }
}
