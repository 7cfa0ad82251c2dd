import Glibc
import KilnWire

/// The guest's state between methods: what `hello` and `pong` report, the processes `reset` ends.
struct Housekeeping {
    /// True inside a VM: the agent is the guest's init, and `shutdown` powers the machine off.
    let ownsMachine: Bool
    /// The cgroup methods run in, when the guest made one.
    let methodCgroup: String?

    /// The greeting: agent version, uptime, CPUs and memory as the guest sees them.
    static func hello(version: String) -> GuestFrame.Hello {
        GuestFrame.Hello(
            agentVersion: version, uptimeUs: uptimeMicroseconds(),
            vcpus: UInt32(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))),
            memoryMB: UInt32((meminfoKB("MemTotal:") ?? 0) / 1024)
        )
    }

    /// Tells the kernel's out-of-memory killer never to choose this process.
    static func protectFromOOMKiller() {
        _ = writeSmallFile("/proc/self/oom_score_adj", "-1000")
    }

    /// The out-of-memory kills since boot (`oom_kill` in /proc/vmstat; 0 where there is none).
    static func oomKills() -> UInt64 {
        guard let vmstat = readSmallFile("/proc/vmstat", limit: 16_384) else { return 0 }
        for line in vmstat.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return UInt64(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return 0
    }

    /// The guest's memory, MiB.
    static func memoryTotalMB() -> UInt64 {
        (meminfoKB("MemTotal:") ?? 0) / 1024
    }

    /// The VM's memory as its profile gives it (`kiln.memory_mb=` on the kernel command line),
    /// which the kernel's MemTotal falls short of by what the kernel itself takes.
    static func profileMemoryMB() -> UInt64? {
        kernelParameter("kiln.memory_mb")
    }

    /// How long the host lets warm runtimes take to get ready before the VM greets
    /// (`kiln.warm_wait_ms=` on the kernel command line: part of the host's boot timeout), µs.
    static func warmWaitUs() -> UInt64? {
        kernelParameter("kiln.warm_wait_ms").map { min($0, 3_600_000) * 1000 }
    }

    /// The number the host gave as `name=` on the kernel command line.
    private static func kernelParameter(_ name: String) -> UInt64? {
        guard let line = readSmallFile("/proc/cmdline") else { return nil }
        for word in line.split(whereSeparator: { $0 == " " || $0 == "\n" }) where word.hasPrefix(name + "=") {
            return UInt64(word.dropFirst(name.count + 1))
        }
        return nil
    }

    /// The answer to `ping`: uptime, one-minute load, MemAvailable.
    static func pong() -> GuestFrame.Pong {
        let load1 = readSmallFile("/proc/loadavg")?.split(separator: " ").first.flatMap { Double($0) }
        return GuestFrame.Pong(
            uptimeUs: uptimeMicroseconds(), load1: load1 ?? 0,
            memAvailableKB: meminfoKB("MemAvailable:") ?? meminfoKB("MemFree:") ?? 0
        )
    }

    /// Kills every other process of this guest (when the agent is its PID 1) and reaps them;
    /// false when reaping stalled for `stallLimitUs` (a fork bomb under a starved vCPU), and the
    /// guest must not be handed to another call. A long reap that keeps making progress (hundreds
    /// of processes dying on a vCPU the host hardly schedules) is waited out: the host's request
    /// timeout bounds it.
    func killEverything(stallLimitUs: UInt64 = 3_000_000) -> Bool {
        if getpid() == 1 {
            // Nothing but this process (the common case between calls): nothing to kill.
            let alone = kill(-1, SIGKILL) != 0 && errno == ESRCH
            // Else the methods' cgroup: cgroup.kill ends all of it at once, forks in flight
            // included, where kill(-1) races a fork bomb process by process.
            if !alone, let methodCgroup { _ = writeSmallFile(methodCgroup + "/cgroup.kill", "1") }
            var giveUp = monotonicMicroseconds() + stallLimitUs
            while true {
                var status: Int32 = 0
                let reaped = waitpid(-1, &status, WNOHANG)
                if reaped < 0 { break }  // ECHILD: nothing left
                let now = monotonicMicroseconds()
                if reaped > 0 {
                    giveUp = now + stallLimitUs
                    continue
                }
                if now >= giveUp { return false }
                // Nothing ready: signal again (a child forked while the last signals went out;
                // as PID 1, kill(-1) reaches every process of the guest but this one), then wait.
                kill(-1, SIGKILL)
                var pause = timespec(tv_sec: 0, tv_nsec: 200_000)
                nanosleep(&pause, nil)
            }
        }
        _ = reapOrphans()
        return true
    }

    /// Reaps exited children that are not a method's main process (orphans re-parented to PID 1,
    /// or a serve runtime that ended between calls); returns them with their wait status.
    func reapOrphans() -> [(pid: pid_t, status: Int32)] {
        var reaped: [(pid: pid_t, status: Int32)] = []
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            guard pid > 0 else { return reaped }
            reaped.append((pid, status))
        }
    }

    /// Powers the guest off (as PID 1 in a VM), or ends the agent.
    func powerOff() -> Never {
        sync()
        if ownsMachine && getpid() == 1 {
            // Glibc's module has no reboot(2); the magic SysRq key powers off just the same.
            let fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC)
            if fd >= 0 {
                var key: UInt8 = UInt8(ascii: "o")
                _ = write(fd, &key, 1)
                close(fd)
            }
            var pause = timespec(tv_sec: 5, tv_nsec: 0)
            nanosleep(&pause, nil)
        }
        exit(0)
    }

    static func uptimeMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }

    /// A field of /proc/meminfo, in KiB (scanned as bytes: this runs right after a restore,
    /// when every new code path costs translation time under TCG).
    private static func meminfoKB(_ field: String) -> UInt64? {
        guard let text = readSmallFile("/proc/meminfo") else { return nil }
        let bytes = Array(text.utf8)
        let key = Array(field.utf8)
        var index = 0
        while index + key.count <= bytes.count {
            if bytes[index..<index + key.count].elementsEqual(key) {
                var cursor = index + key.count
                while cursor < bytes.count && bytes[cursor] == UInt8(ascii: " ") { cursor += 1 }
                var value: UInt64 = 0
                while cursor < bytes.count, bytes[cursor] >= UInt8(ascii: "0"), bytes[cursor] <= UInt8(ascii: "9") {
                    value = value * 10 + UInt64(bytes[cursor] - UInt8(ascii: "0"))
                    cursor += 1
                }
                return value
            }
            while index < bytes.count && bytes[index] != UInt8(ascii: "\n") { index += 1 }
            index += 1
        }
        return nil
    }
}
