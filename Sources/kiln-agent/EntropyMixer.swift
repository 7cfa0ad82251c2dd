import Glibc

/// Gives a restored clone its own randomness. Clones of one snapshot share the kernel's RNG state;
/// the agent mixes in what differs between them (the time of the restore, the host's requests,
/// which carry unique ids) and asks the kernel to reseed its CRNG, which also draws on RDRAND/RDSEED
/// where the CPU has them.
struct EntropyMixer {
    /// `RNDRESEEDCRNG` from <linux/random.h>: `_IO('R', 0x07)`.
    private static let reseedRequest: UInt = 0x5207
    private var pendingReseed = false

    /// Mixes the restore time in now, and reseeds again after the first request arrives.
    mutating func reseedAfterRestore() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var boot = timespec()
        clock_gettime(CLOCK_BOOTTIME, &boot)
        write(bytesOf: [UInt64(bitPattern: Int64(now.tv_nsec)), UInt64(bitPattern: Int64(now.tv_sec)),
                        UInt64(bitPattern: Int64(boot.tv_nsec))])
        pendingReseed = true
        reseed()
    }

    /// Mixes `bytes` (a request from the host) into the kernel pool; the first time after a
    /// restore, reseeds the CRNG from it.
    mutating func mix(_ bytes: ArraySlice<UInt8>) {
        guard pendingReseed else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        write(bytes: Array(bytes) + withUnsafeBytes(of: now.tv_nsec) { Array($0) })
        reseed()
        pendingReseed = false
    }

    private func write(bytesOf words: [UInt64]) {
        write(bytes: words.withUnsafeBytes { Array($0) })
    }

    private func write(bytes: [UInt8]) {
        let fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    private func reseed() {
        let fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        // Needs CAP_SYS_ADMIN: true for the agent as PID 1 of a guest; harmless when it fails.
        _ = ioctl(fd, Self.reseedRequest)
    }
}
