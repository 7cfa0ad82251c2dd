import Glibc
import KilnWire

/// One serve-mode method runtime: the method's program, started once with `KILN_MODE=serve` in a
/// process group of its own, called with ``ServeCall`` frames on its stdin and answering with
/// ``ServeAnswer`` frames on its stdout, one call at a time. Its stderr is collected as it comes;
/// the tail goes back with each result. A class: it is one process with pipes and buffers, owned
/// by ``ServeRuntimes`` and never copied (a copy of its buffers per call cost more than the call).
final class ServeRuntime {
    /// How a call ended.
    enum CallOutcome {
        /// The runtime answered (maybe with an error); it stays up.
        case answered(ServeAnswerFields)
        /// The call could not be made (the payload is not a map); the runtime stays up.
        case refused(String)
        /// The deadline passed; the runtime must be killed.
        case timedOut
        /// The runtime exited, or its stdout reached EOF; it must be killed and reaped.
        case ended
        /// The runtime wrote something that is not an answer to this call; it must be killed.
        case brokeProtocol(String)
        /// The runtime's answer is larger than the agent takes; it must be killed (its stdout is
        /// out of step), but it did not misbehave otherwise.
        case answerTooLarge(String)
    }

    let method: String
    let entry: [String]
    let pid: pid_t
    /// Calls answered so far.
    private(set) var calls = 0
    private var stdin: Int32
    private var stdout: Int32
    private var stderr: Int32
    /// `/proc/<pid>/status`, kept open for the peak RSS (re-read from offset 0 at each call).
    private var statusFile: Int32
    /// `/proc/<pid>/stat`, kept open: one `pread` reads the runtime's CPU time.
    private var statFile: Int32
    private var frames = FrameBuffer(maxFrameBytes: MethodRunner.maxOutputBytes)
    private var stderrBytes: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 64 * 1024)

    /// Starts the runtime; on failure, why.
    static func start(method: String, entry: [String], scratch: String) -> Result<ServeRuntime, StartFailure> {
        guard let program = entry.first, !program.isEmpty else { return .failure(StartFailure(message: "the entry is empty")) }
        var stdinPipe = Pipe(), stdoutPipe = Pipe(), stderrPipe = Pipe()
        guard stdinPipe.open(), stdoutPipe.open(), stderrPipe.open() else {
            let message = "pipe: \(describeErrno(errno))"
            stdinPipe.closeBoth(); stdoutPipe.closeBoth(); stderrPipe.closeBoth()
            return .failure(StartFailure(message: message))
        }
        let spawned = ProgramSpawner.spawn(
            method: method, arguments: entry,
            environment: ProgramSpawner.environment(method: method, scratch: scratch, extra: [
                "\(ServeProtocol.modeVariable)=serve", "KILN_METHOD=\(method)",
            ]),
            stdin: stdinPipe.read, stdout: stdoutPipe.write, stderr: stderrPipe.write)
        stdinPipe.closeRead(); stdoutPipe.closeWrite(); stderrPipe.closeWrite()
        switch spawned {
        case .failure(let reason):
            stdinPipe.closeBoth(); stdoutPipe.closeBoth(); stderrPipe.closeBoth()
            return .failure(StartFailure(message: "cannot start \(program): \(reason)"))
        case .success(let pid):
            for fd in [stdinPipe.write, stdoutPipe.read, stderrPipe.read] {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            }
            return .success(ServeRuntime(
                method: method, entry: entry, pid: pid, stdin: stdinPipe.write, stdout: stdoutPipe.read,
                stderr: stderrPipe.read, statusFile: open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC),
                statFile: open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)))
        }
    }

    /// Why a runtime did not start.
    struct StartFailure: Error {
        let message: String
    }

    private init(method: String, entry: [String], pid: pid_t, stdin: Int32, stdout: Int32, stderr: Int32, statusFile: Int32, statFile: Int32) {
        self.statFile = statFile
        self.method = method
        self.entry = entry
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.statusFile = statusFile
    }

    /// The wait status, once the process has exited and been reaped.
    private(set) var exitStatus: Int32?

    /// Whether the process was running when it was last reaped for: the agent reaps every
    /// exited child before each call, and ``noteReaped(status:)`` records this one's exit.
    var isRunning: Bool { exitStatus == nil }

    /// Records the wait status when something else (the agent's orphan reaper) collected it.
    func noteReaped(status: Int32) {
        exitStatus = status
    }

    /// Sends one call and waits for its answer until `deadlineUs` (monotonic).
    func call(_ request: GuestFrame.ExecRequest, deadlineUs: UInt64) -> CallOutcome {
        let framed: [UInt8]
        do {
            framed = try ServeCall.body(payload: request.payload, id: request.id, deadlineMs: request.deadlineMs, framed: true)
        } catch {
            return .refused("the payload is not the MessagePack map {args, context}: \(error)")
        }
        var written = 0
        var fds = (pollfd(), pollfd(), pollfd())
        while true {
            if written < framed.count {
                let count = framed.withUnsafeBytes { write(stdin, $0.baseAddress! + written, $0.count - written) }
                if count > 0 {
                    written += count
                } else if count < 0 && errno != EAGAIN && errno != EINTR {
                    return .ended  // EPIPE: the runtime is gone
                }
            }
            do {
                if let body = try frames.nextFrame() {
                    if body == ServeProtocol.readyBody {
                        isReady = true
                        continue
                    }
                    return answer(to: request, body: body)
                }
            } catch {
                if case .limitExceeded(.frameBytes, _, _, _) = error { return .answerTooLarge("\(error)") }
                return .brokeProtocol("its stdout is not length-prefixed frames: \(error)")
            }
            let now = monotonicMicroseconds()
            guard now < deadlineUs else { return .timedOut }
            // stdout, stderr, stdin while the call is not all written; -1 entries are ignored.
            fds.0 = pollfd(fd: stdout, events: Int16(POLLIN), revents: 0)
            fds.1 = pollfd(fd: stderr, events: Int16(POLLIN), revents: 0)
            fds.2 = pollfd(fd: written < framed.count ? stdin : -1, events: Int16(POLLOUT), revents: 0)
            let ready = withUnsafeMutableBytes(of: &fds) { raw in
                poll(raw.baseAddress!.assumingMemoryBound(to: pollfd.self), 3, Int32(min((deadlineUs - now + 999) / 1000, 1_000)))
            }
            if ready < 0 && errno != EINTR { return .ended }
            if ready <= 0 { continue }
            if fds.1.revents != 0 { readStderr() }
            if fds.0.revents != 0 && !readStdout() { return .ended }
        }
    }

    /// Whether the runtime has said it is ready for calls.
    private(set) var isReady = false

    /// Waits until the runtime says it is ready (``ServeProtocol/readyBody``), until `deadlineUs`.
    /// - Returns: false when it did not say so in time, or wrote something else first.
    func awaitReady(deadlineUs: UInt64) -> Bool {
        while !isReady {
            do {
                if let body = try frames.nextFrame() {
                    isReady = body == ServeProtocol.readyBody
                    return isReady
                }
            } catch {
                return false
            }
            let now = monotonicMicroseconds()
            guard now < deadlineUs else { return false }
            var fds = (pollfd(fd: stdout, events: Int16(POLLIN), revents: 0), pollfd(fd: stderr, events: Int16(POLLIN), revents: 0))
            let ready = withUnsafeMutableBytes(of: &fds) { raw in
                poll(raw.baseAddress!.assumingMemoryBound(to: pollfd.self), 2, Int32(min((deadlineUs - now + 999) / 1000, 1_000)))
            }
            if ready < 0 && errno != EINTR { return false }
            if ready <= 0 { continue }
            if fds.1.revents != 0 { readStderr() }
            if fds.0.revents != 0 && !readStdout() { return false }
        }
        return true
    }

    /// The tail of what the runtime wrote to stderr since the last result (as far as the calls
    /// read it), which it then forgets.
    func takeStderrTail() -> String {
        defer { stderrBytes.removeAll(keepingCapacity: true) }
        return String(decoding: stderrBytes.suffix(MethodRunner.stderrTailBytes), as: UTF8.self)
    }

    /// The runtime's peak resident set, in KiB (`VmHWM`): read afresh at the first call and then
    /// every ``rssInterval`` calls (procfs is slow to read under TCG, and peaks move slowly).
    func peakRSSKB() -> UInt64 {
        if calls % Self.rssInterval == 1 || cachedRSSKB == 0 { cachedRSSKB = readPeakRSSKB() }
        return cachedRSSKB
    }

    /// How often ``peakRSSKB()`` reads procfs, in calls.
    static let rssInterval = 64
    private var cachedRSSKB: UInt64 = 0

    /// `VmHWM` from `/proc/<pid>/status`, in KiB.
    func readPeakRSSKB() -> UInt64 {
        guard statusFile >= 0 else { return 0 }
        var text = [UInt8](repeating: 0, count: 2048)
        let count = text.withUnsafeMutableBytes { pread(statusFile, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return 0 }
        let key = Array("VmHWM:".utf8)
        var index = 0
        while index + key.count < count {
            if text[index..<index + key.count].elementsEqual(key) {
                var cursor = index + key.count
                var value: UInt64 = 0
                while cursor < count && (text[cursor] == UInt8(ascii: " ") || text[cursor] == UInt8(ascii: "\t")) { cursor += 1 }
                while cursor < count, text[cursor] >= UInt8(ascii: "0"), text[cursor] <= UInt8(ascii: "9") {
                    value = value * 10 + UInt64(text[cursor] - UInt8(ascii: "0"))
                    cursor += 1
                }
                return value
            }
            while index < count && text[index] != UInt8(ascii: "\n") { index += 1 }
            index += 1
        }
        return 0
    }

    /// The CPU time the runtime and the children it waited for have used, user + system, in
    /// microseconds (`/proc/<pid>/stat`, in clock ticks); nil once it has gone.
    func cpuMicroseconds() -> UInt64? {
        guard statFile >= 0 else { return nil }
        var text = [UInt8](repeating: 0, count: 1024)
        let count = text.withUnsafeMutableBytes { pread(statFile, $0.baseAddress, $0.count, 0) }
        // The name in parentheses may hold spaces: the fields start after the last ')'.
        guard count > 0, let close = text[..<count].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = text[(close + 1)..<count].split(separator: UInt8(ascii: " "))
        // utime, stime, cutime, cstime: fields 14 to 17, the 12th to 15th after the name.
        guard fields.count > 14 else { return nil }
        var ticks: UInt64 = 0
        for field in fields[11...14] {
            guard let value = UInt64(String(decoding: field, as: UTF8.self)) else { return nil }
            ticks &+= value
        }
        return ticks &* 1_000_000 / Self.clockTicksPerSecond
    }

    private static let clockTicksPerSecond = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))

    /// Kills the runtime's process group, reaps the runtime and closes its pipes. Returns its wait
    /// status.
    func kill() -> Int32 {
        Glibc.kill(-pid, SIGKILL)
        var status: Int32 = exitStatus ?? 0
        if exitStatus == nil {
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            exitStatus = status
        }
        for fd in [stdin, stdout, stderr, statusFile, statFile] where fd >= 0 { close(fd) }
        // A closed number may be reused by the next open: nothing reads through these again.
        stdin = -1
        stdout = -1
        stderr = -1
        statusFile = -1
        statFile = -1
        return status
    }

    private func answer(to request: GuestFrame.ExecRequest, body: [UInt8]) -> CallOutcome {
        let answer: ServeAnswerFields
        do {
            answer = try ServeAnswerFields(body: body)
        } catch {
            return .brokeProtocol("its answer is not {id, output, context?, error?}: \(error)")
        }
        guard answer.id == request.id else {
            return .brokeProtocol("it answered call '\(answer.id)' while '\(request.id)' was waiting")
        }
        calls += 1
        return .answered(answer)
    }

    /// Reads what stdout has into the frame buffer; false at EOF or on an error.
    private func readStdout() -> Bool {
        while true {
            let count = chunk.withUnsafeMutableBytes { read(stdout, $0.baseAddress, $0.count) }
            if count > 0 {
                chunk.withUnsafeBytes { frames.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
                if count < chunk.count { return true }
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                return count < 0 && errno == EAGAIN
            }
        }
    }

    private func readStderr() {
        guard stderr >= 0 else { return }
        while true {
            let count = chunk.withUnsafeMutableBytes { read(stderr, $0.baseAddress, $0.count) }
            if count > 0 {
                stderrBytes.append(contentsOf: chunk[0..<count])
                if stderrBytes.count > 4 * MethodRunner.stderrTailBytes {
                    stderrBytes.removeFirst(stderrBytes.count - MethodRunner.stderrTailBytes)
                }
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                if count == 0 || errno != EAGAIN {
                    close(stderr)
                    stderr = -1
                }
                return
            }
        }
    }
}
