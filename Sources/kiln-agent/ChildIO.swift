import Glibc

/// Feeds a method its payload and collects its stdout and stderr with `poll`, until both reach
/// EOF, the child exits, the deadline passes or stdout grows too large.
struct ChildIO {
    enum Outcome {
        /// stdout and stderr reached EOF; the child has not been waited for yet.
        case finished
        /// The child exited while something else still held its pipes; already waited for.
        case exited(status: Int32, usage: rusage)
        case timedOut
        case outputTooLarge
    }

    private var stdin: Int32
    private var stdout: Int32
    private var stderr: Int32
    private let payload: [UInt8]
    private var payloadOffset = 0
    private(set) var output: [UInt8] = []
    private var stderrBytes: [UInt8] = []

    init(stdin: Int32, stdout: Int32, stderr: Int32, payload: [UInt8]) {
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.payload = payload
        for fd in [stdin, stdout, stderr] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        if payload.isEmpty { closeStdin() }
    }

    mutating func pump(child: pid_t, deadlineUs: UInt64) -> Outcome {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while stdout >= 0 || stderr >= 0 {
            let now = monotonicMicroseconds()
            guard now < deadlineUs else { return .timedOut }
            // Wake at least every 50 ms to notice a child that exited while a grandchild keeps
            // its pipes open.
            let waitMs = Int32(min((deadlineUs - now + 999) / 1000, 50))
            var fds: [pollfd] = []
            if stdin >= 0 { fds.append(pollfd(fd: stdin, events: Int16(POLLOUT), revents: 0)) }
            if stdout >= 0 { fds.append(pollfd(fd: stdout, events: Int16(POLLIN), revents: 0)) }
            if stderr >= 0 { fds.append(pollfd(fd: stderr, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), waitMs)
            if ready < 0 {
                if errno == EINTR { continue }
                return .timedOut
            }
            if ready == 0 {
                var status: Int32 = 0
                var usage = rusage()
                if wait4(child, &status, WNOHANG, &usage) == child {
                    drain(&chunk)
                    return .exited(status: status, usage: usage)
                }
                continue
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == stdin {
                    feedStdin()
                } else if entry.fd == stdout {
                    if !Self.read(from: &stdout, into: &output, chunk: &chunk) { return .outputTooLarge }
                } else if entry.fd == stderr {
                    _ = Self.read(from: &stderr, into: &stderrBytes, chunk: &chunk)
                    if stderrBytes.count > 4 * MethodRunner.stderrTailBytes {
                        stderrBytes.removeFirst(stderrBytes.count - MethodRunner.stderrTailBytes)
                    }
                }
            }
        }
        return .finished
    }

    /// The last bytes of stderr, as text.
    func stderrTail() -> String {
        String(decoding: stderrBytes.suffix(MethodRunner.stderrTailBytes), as: UTF8.self)
    }

    mutating func closeAll() {
        closeStdin()
        if stdout >= 0 { close(stdout) }
        if stderr >= 0 { close(stderr) }
        stdout = -1
        stderr = -1
    }

    private mutating func closeStdin() {
        if stdin >= 0 { close(stdin) }
        stdin = -1
    }

    private mutating func feedStdin() {
        let written = payload.withUnsafeBytes { write(stdin, $0.baseAddress! + payloadOffset, $0.count - payloadOffset) }
        if written > 0 {
            payloadOffset += written
            if payloadOffset == payload.count { closeStdin() }
        } else if written < 0 && errno != EAGAIN && errno != EINTR {
            closeStdin()  // the program stopped reading (EPIPE): its business
        }
    }

    /// Reads what is there; closes `fd` at EOF. False when stdout passed its limit.
    private static func read(from fd: inout Int32, into bytes: inout [UInt8], chunk: inout [UInt8]) -> Bool {
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                bytes.append(contentsOf: chunk[0..<count])
                if bytes.count > MethodRunner.maxOutputBytes { return false }
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                if count == 0 || (errno != EAGAIN) {
                    close(fd)
                    fd = -1
                }
                return true
            }
        }
    }

    private mutating func drain(_ chunk: inout [UInt8]) {
        if stdout >= 0 { _ = Self.read(from: &stdout, into: &output, chunk: &chunk) }
        if stderr >= 0 { _ = Self.read(from: &stderr, into: &stderrBytes, chunk: &chunk) }
    }
}
