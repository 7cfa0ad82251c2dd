import Glibc
import KilnWire

/// The method side of the contract: the request on stdin, the answer on stdout, failures on
/// stderr with a non-zero exit code.
enum MethodIO {
    /// The decoded `{args, context}` map; exits 65 when stdin is not MessagePack.
    static func readInput() -> MessagePackValue {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count > 0 {
                bytes.append(contentsOf: chunk[0..<count])
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        if bytes.isEmpty { return .map([]) }
        do {
            return try MessagePackDecoder().decodeValue(from: bytes)
        } catch {
            fail("cannot decode the request on stdin: \(error)", exitCode: 65)
        }
    }

    /// Writes `{output, context?}` to stdout.
    static func writeAnswer(output: MessagePackValue, context: MessagePackValue?) {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "output", value: output)]
        if let context, context != .nil { entries.append((key: "context", value: context)) }
        let bytes: [UInt8]
        do {
            bytes = try MessagePackEncoder().encode(MessagePackValue.map(entries))
        } catch {
            fail("cannot encode the answer: \(error)", exitCode: 70)
        }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
            if written > 0 {
                offset += written
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                exit(74)
            }
        }
    }

    /// Writes `message` to stderr and exits with `exitCode`.
    static func fail(_ message: String, exitCode: Int32) -> Never {
        let bytes = Array((message + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(exitCode)
    }

    /// Runs `body` on `count` threads at once (the calling thread among them) and returns what
    /// each returned; exits 71 when a thread cannot be started.
    static func onThreads(_ count: Int, _ body: @escaping @Sendable () -> UInt64) -> [UInt64] {
        final class Job: @unchecked Sendable {
            let body: @Sendable () -> UInt64
            var result: UInt64 = 0
            init(_ body: @escaping @Sendable () -> UInt64) { self.body = body }
        }
        let jobs = (1..<max(1, count)).map { _ in Job(body) }
        var threads: [pthread_t] = []
        for job in jobs {
            var thread = pthread_t()
            let started = pthread_create(&thread, nil, { raw in
                let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
                job.result = job.body()
                return nil
            }, Unmanaged.passRetained(job).toOpaque())
            guard started == 0 else { fail("cannot start a thread: \(String(cString: strerror(started)))", exitCode: 71) }
            threads.append(thread)
        }
        let mine = body()
        for thread in threads { pthread_join(thread, nil) }
        return [mine] + jobs.map(\.result)
    }

    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
