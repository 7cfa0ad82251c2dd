/// Runs `body` repeatedly for about `seconds`, `rounds` times, and returns the best rate in
/// operations per second. The best round is the one least disturbed by the rest of the machine.
func bestRate(seconds: Double, rounds: Int = 5, _ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    // Warm up: caches, allocator, lazy initialisation.
    let warmUpEnd = clock.now.advanced(by: .milliseconds(100))
    while clock.now < warmUpEnd { try body() }

    var best = 0.0
    let roundLength = Duration.seconds(seconds / Double(rounds))
    for _ in 0..<rounds {
        var operations = 0
        let start = clock.now
        var elapsed = Duration.zero
        repeat {
            for _ in 0..<16 { try body() }
            operations += 16
            elapsed = start.duration(to: clock.now)
        } while elapsed < roundLength
        best = max(best, Double(operations) / elapsed.seconds)
    }
    return best
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}

/// A plain-text table with right-aligned numeric columns.
struct TextTable {
    let headers: [String]
    private(set) var rows: [[String]] = []

    init(_ headers: String...) {
        self.headers = headers
    }

    mutating func add(_ cells: String...) {
        rows.append(cells)
    }

    func render() -> String {
        let widths = headers.indices.map { column in
            ([headers[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(headers), rule] + rows.map(line)).joined(separator: "\n")
    }
}

/// Formats a number with a fixed count of decimals and thousands separators.
func formatted(_ value: Double, decimals: Int = 0) -> String {
    guard value.isFinite else { return "-" }
    let scale = (0..<decimals).reduce(1.0) { acc, _ in acc * 10 }
    let rounded = (value * scale).rounded() / scale
    let whole = Int(rounded)
    var digits = String(abs(whole))
    var grouped = ""
    while digits.count > 3 {
        grouped = "," + digits.suffix(3) + grouped
        digits = String(digits.dropLast(3))
    }
    var text = (whole < 0 ? "-" : "") + digits + grouped
    if decimals > 0 {
        let fraction = Int(((abs(rounded) - Double(abs(whole))) * scale).rounded())
        let padded = String(fraction)
        text += "." + String(repeating: "0", count: max(0, decimals - padded.count)) + padded
    }
    return text
}
