import Glibc
import KilnDigest
import KilnWire

/// The example methods.
enum ExampleMethod: String, CaseIterable {
    /// Returns its args as its output.
    case echo
    /// Sleeps `args.ms` milliseconds.
    case sleep
    /// Exits 3 with a message on stderr.
    case fail
    /// Keeps `args.threads` CPUs (1 to 16; 1 by default) busy for `args.ms` milliseconds.
    case burn
    /// The SHA-256 of `args.data` (a bin or a str), as lower-case hex.
    case sha256
    /// Fills `args.mb` MiB of memory (0 to 65536), touching every page, and returns when all of
    /// it was resident at once: a method that needs that much memory.
    case allocate

    func run(args: MessagePackValue) -> MessagePackValue {
        switch self {
        case .echo:
            return args
        case .sleep:
            let milliseconds = args["ms"]?.uint64Value ?? 0
            var pause = timespec(tv_sec: Int(milliseconds / 1000), tv_nsec: Int(milliseconds % 1000) * 1_000_000)
            var remaining = timespec()
            while nanosleep(&pause, &remaining) != 0 && errno == EINTR { pause = remaining }
            return ["slept_ms": .uint(milliseconds)]
        case .fail:
            let reason = args["message"]?.stringValue ?? "the fail method always fails"
            MethodIO.fail("fail: \(reason)", exitCode: 3)
        case .burn:
            let milliseconds = min(args["ms"]?.uint64Value ?? 0, 3_600_000)
            let threads = Int(min(max(args["threads"]?.uint64Value ?? 1, 1), 16))
            let end = MethodIO.monotonicNanoseconds() + milliseconds * 1_000_000
            let rounds = MethodIO.onThreads(threads) {
                var rounds: UInt64 = 0
                var hash = SHA256()
                var block = [UInt8](repeating: 0x5a, count: 64)
                while MethodIO.monotonicNanoseconds() < end {
                    for _ in 0..<64 { hash.update(block) }
                    block[0] &+= 1
                    rounds += 1
                }
                return rounds
            }
            return ["burned_ms": .uint(milliseconds), "threads": .uint(UInt64(threads)), "rounds": .uint(rounds.reduce(0, +))]
        case .allocate:
            // In blocks of 1 MiB, each touched in every page: the kernel grants each block, and
            // a guest without the memory ends the method with its OOM killer (one reservation of
            // the whole would just fail). The sum read back keeps the stores from being dropped.
            let megabytes = Int(min(args["mb"]?.uint64Value ?? 0, 65_536))
            var blocks: [UnsafeMutablePointer<UInt8>] = []
            defer { blocks.forEach { free($0) } }
            var sum: UInt64 = 0
            for block in 0..<megabytes {
                guard let memory = malloc(1 << 20) else { MethodIO.fail("allocate: no memory after \(block) MiB", exitCode: 12) }
                let bytes = memory.bindMemory(to: UInt8.self, capacity: 1 << 20)
                for page in stride(from: 0, to: 1 << 20, by: 4_096) { bytes[page] = UInt8(truncatingIfNeeded: block) | 1 }
                for page in stride(from: 0, to: 1 << 20, by: 4_096) { sum &+= UInt64(bytes[page]) }
                blocks.append(bytes)
            }
            return ["allocated_mb": .uint(UInt64(megabytes)), "checksum": .uint(sum)]
        case .sha256:
            let data: [UInt8]
            switch args["data"] {
            case .binary(let bytes): data = bytes
            case .string(let text): data = Array(text.utf8)
            default: MethodIO.fail("sha256: args.data must be a bin or a str", exitCode: 2)
            }
            return .string(SHA256.hash(data).hexString)
        }
    }
}
