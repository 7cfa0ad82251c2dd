#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// CPU time of processes, from `/proc`: what a benchmark's invocations cost each part of the
/// system (the worker, its VMs, the broker, the producer).
enum ProcessCPU {
    /// A process's CPU time (user + system) so far, µs; 0 when it is gone.
    static func microseconds(_ pid: pid_t) -> UInt64 {
        guard let fields = statFields(pid), fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return 0 }
        return (user + system) * 1_000_000 / UInt64(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The fields of `/proc/PID/stat` after the command's closing parenthesis (state is the first).
    private static func statFields(_ pid: pid_t) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// Every live descendant of `pid` (QEMUs, sandboxes and what runs in them), by PID.
    static func descendants(of pid: pid_t) -> Set<pid_t> {
        var parents: [pid_t: pid_t] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let child = pid_t(entry), let fields = statFields(child), fields.count > 1, let parent = pid_t(fields[1]) else { continue }
            parents[child] = parent
        }
        var found: Set<pid_t> = []
        var frontier: Set<pid_t> = [pid]
        while !frontier.isEmpty {
            let next = Set(parents.filter { frontier.contains($0.value) }.keys).subtracting(found)
            found.formUnion(next)
            frontier = next
        }
        return found
    }

    /// The CPU time of each of `pids`, µs.
    static func snapshot(_ pids: Set<pid_t>) -> [pid_t: UInt64] {
        Dictionary(uniqueKeysWithValues: pids.map { ($0, microseconds($0)) })
    }

    /// CPU spent between two snapshots, µs: processes that started in between count whole, those
    /// that ended in between are lost (their time went to their parent's reaped-children count).
    static func spent(from before: [pid_t: UInt64], to after: [pid_t: UInt64]) -> UInt64 {
        after.reduce(0) { total, entry in total + (entry.value - min(entry.value, before[entry.key] ?? 0)) }
    }

    /// The PID of the broker `deploy/local/rabbitmq.sh start` runs.
    static func localBrokerPID() throws -> pid_t {
        guard let text = try? String(contentsOfFile: ".local/rabbitmq/rabbit.pid", encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw BenchmarkError("no local broker: run `deploy/local/rabbitmq.sh start`")
        }
        return pid
    }
}
