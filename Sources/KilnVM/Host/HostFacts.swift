import Glibc

/// Facts about this host that VM command lines depend on.
public enum HostFacts {
    /// The CPU clock in kHz from `/proc/cpuinfo` ("cpu MHz : 2596.150" → 2596150); the guest's
    /// `tsc_early_khz`. nil when cpuinfo has no MHz line.
    public static func cpuKHz(cpuinfo: String? = nil) -> Int? {
        let text = cpuinfo ?? readFile("/proc/cpuinfo").map { String(decoding: $0, as: UTF8.self) } ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("cpu MHz") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let value = line[line.index(after: colon)...].trimmingPrefix(" ")
            if let megahertz = Double(value), megahertz > 0 { return Int((megahertz * 1000).rounded()) }
        }
        return nil
    }

    /// True when `/dev/kvm` exists and opens read-write (it may still not work: probe with a boot).
    public static var kvmDeviceOpens: Bool {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }
}
