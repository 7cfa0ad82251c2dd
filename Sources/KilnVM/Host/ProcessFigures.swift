import Glibc

/// Memory and CPU figures of a host process, from procfs.
public enum ProcessFigures {
    /// Rss and Pss (KiB) from `/proc/PID/smaps_rollup`.
    public static func memory(pid: Int32) -> (rssKB: UInt64, pssKB: UInt64)? {
        guard let bytes = readFile("/proc/\(pid)/smaps_rollup") else { return nil }
        return parseSmapsRollup(String(decoding: bytes, as: UTF8.self))
    }

    /// Parses the `Rss:` and `Pss:` lines of smaps_rollup.
    public static func parseSmapsRollup(_ text: String) -> (rssKB: UInt64, pssKB: UInt64)? {
        var rss: UInt64?
        var pss: UInt64?
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2 else { continue }
            if fields[0] == "Rss:" { rss = UInt64(fields[1]) }
            if fields[0] == "Pss:" { pss = UInt64(fields[1]) }
        }
        guard let rss, let pss else { return nil }
        return (rss, pss)
    }

    /// utime + stime of `pid`, in microseconds, from `/proc/PID/stat`; with `reapedChildren`,
    /// also the time of the children it has waited for (cutime + cstime).
    public static func cpuTimeUs(pid: Int32, reapedChildren: Bool = false) -> UInt64? {
        guard let bytes = readFile("/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        // Fields after the command name, which is in parentheses and may hold spaces.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3); utime and stime are fields 14 and 15.
        guard fields.count > 14, let user = UInt64(fields[11]), let system = UInt64(fields[12]),
              let childrenUser = UInt64(fields[13]), let childrenSystem = UInt64(fields[14]) else { return nil }
        let ticks = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        return (user + system + (reapedChildren ? childrenUser + childrenSystem : 0)) * 1_000_000 / ticks
    }
}
