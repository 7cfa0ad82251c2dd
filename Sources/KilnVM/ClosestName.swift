/// The known name a mistyped one most likely meant, for "did you mean" in errors: the manifest's
/// keys, the worker's configuration fields and `KILN_*` variables, the methods of an image.
public enum ClosestName {
    /// The name in `candidates` nearest to `name` by edit distance (case ignored), when it is
    /// near enough to be a typo: at most a third of the longer name's characters differ (at
    /// least one may), or the name is the start of a longer one (`size` for `size_mb`). Ties go
    /// to the first candidate in sorted order.
    public static func to(_ name: String, among candidates: some Sequence<String>) -> String? {
        let typed = Array(name.lowercased().unicodeScalars)
        var best: (name: String, distance: Int)?
        for candidate in Set(candidates).sorted() {
            let known = Array(candidate.lowercased().unicodeScalars)
            let allowed = max(1, max(typed.count, known.count) / 3)
            let distance = editDistance(typed, known)
            let isStart = typed.count >= 3 && known.starts(with: typed)
            guard distance <= allowed || isStart, distance < (best?.distance ?? .max) else { continue }
            best = (candidate, distance)
        }
        return best?.name
    }

    /// `" (did you mean X?)"`, or nothing when no name is near: for the end of an error.
    public static func hint(for name: String, among candidates: some Sequence<String>) -> String {
        to(name, among: candidates).map { " (did you mean \($0)?)" } ?? ""
    }

    /// Levenshtein distance, with a transposition of neighbours counting once (`vpcus`).
    static func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var twoBack = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], twoBack[j - 2] + 1)
                }
            }
            (twoBack, previous, current) = (previous, current, twoBack)
        }
        return previous[b.count]
    }
}
