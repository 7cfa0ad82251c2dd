import Glibc
import KilnWire

/// The serve-mode runtimes of this guest, by method: started at a method's first call (or with the
/// VM, for warm ones), called one at a time, killed and started again after a deadline, a crash
/// or a protocol break. Each call's result looks like an exec-mode one: the output bytes are
/// `{output, context?}`, a failure carries an exit code and the tail of stderr.
struct ServeRuntimes {
    let scratch: String
    private var running: [String: ServeRuntime] = [:]

    init(scratch: String) {
        self.scratch = scratch
    }

    /// How long warm runtimes may take to say they are ready before the VM greets its host
    /// anyway, when the host does not say (a QEMU host gives three quarters of its boot timeout):
    /// an interpreter importing its libraries takes seconds under TCG (Python with Pillow 5–10 s
    /// alone, several times that on a loaded host), and a snapshot taken before it is ready would
    /// make every restored VM finish the import at its first call.
    static let defaultWarmWaitUs: UInt64 = 30_000_000

    /// Starts the runtimes of warm methods and waits until each says it is ready (or `waitUs`
    /// passes), so that a snapshot taken after the agent greets holds them idle. A failure shows
    /// on the console; the method's first call starts it again.
    mutating func startWarm(_ methods: [(name: String, entry: [String])], waitUs: UInt64) {
        for (name, entry) in methods {
            switch ServeRuntime.start(method: name, entry: entry, scratch: scratch) {
            case .success(let runtime): running[name] = runtime
            case .failure(let failure): AgentLog.write("kiln-agent: warm runtime of \(name) did not start: \(failure.message)")
            }
        }
        let deadline = monotonicMicroseconds() + waitUs
        for (name, runtime) in running.sorted(by: { $0.key < $1.key }) where !runtime.awaitReady(deadlineUs: deadline) {
            AgentLog.write("kiln-agent: warm runtime of \(name) did not say it is ready (\(runtime.takeStderrTail())); greeting anyway")
        }
    }

    /// Whether `method` has a runtime up, as of the agent's last reap.
    func isRunning(_ method: String) -> Bool {
        running[method]?.isRunning ?? false
    }

    /// Runs one call of a serve-mode method, starting its runtime when it has none (or the one it
    /// had has ended, or was started with another entry).
    mutating func call(_ request: GuestFrame.ExecRequest) -> GuestFrame.ExecResult {
        let started = monotonicMicroseconds()
        if let runtime = running[request.method], runtime.entry != request.entry || !runtime.isRunning {
            _ = runtime.kill()
            running[request.method] = nil
        }
        let startedNow = running[request.method] == nil
        if startedNow {
            switch ServeRuntime.start(method: request.method, entry: request.entry, scratch: scratch) {
            case .success(let runtime): running[request.method] = runtime
            case .failure(let failure):
                return result(request, started: started, status: .error, exitCode: 127, stderr: "serve: \(failure.message)")
            }
        }
        let runtime = running[request.method]!
        let wasReady = runtime.isReady
        var outcome = answer(request, from: runtime, started: started)
        outcome.runtimeStarted = startedNow || !wasReady
        return outcome
    }

    /// The call's result from `runtime`.
    private mutating func answer(_ request: GuestFrame.ExecRequest, from runtime: ServeRuntime, started: UInt64) -> GuestFrame.ExecResult {
        let cpuBefore = runtime.cpuMicroseconds()
        var answer = outcome(request, from: runtime, started: started, cpuBefore: cpuBefore)
        // A runtime the call ended was counted before its kill (and its descriptors are closed).
        if answer.cpuUs == nil, running[request.method] === runtime, let cpuBefore, let cpuAfter = runtime.cpuMicroseconds() {
            answer.cpuUs = cpuAfter &- min(cpuBefore, cpuAfter)
        }
        return answer
    }

    /// The call's result from `runtime`, by how the call went; a runtime the call ended reports
    /// its CPU time before it is killed.
    private mutating func outcome(
        _ request: GuestFrame.ExecRequest, from runtime: ServeRuntime, started: UInt64, cpuBefore: UInt64?
    ) -> GuestFrame.ExecResult {
        switch runtime.call(request, deadlineUs: started + request.deadlineMs * 1000) {
        case .answered(let answer):
            let tail = runtime.takeStderrTail()
            if let error = answer.error {
                var failed = result(request, started: started, status: .error, exitCode: 1, stderr: tail, reportRSS: true)
                failed.methodError = error
                return failed
            }
            return result(request, started: started, status: .ok, output: answer.methodOutput, exitCode: 0, stderr: tail, reportRSS: true)
        case .refused(let reason):
            return result(request, started: started, status: .error, exitCode: 65, stderr: "serve: \(reason)", reportRSS: true)
        case .timedOut:
            return end(request, started: started, status: .timeout, why: "the deadline of \(request.deadlineMs) ms expired", cpuBefore: cpuBefore)
        case .ended:
            // A crash if a crash signal ended it, or it died after serving calls; a runtime that
            // cannot start (an exit code before its first answer) has failed, not crashed.
            let served = runtime.calls > 0
            return end(request, started: started, status: .error, why: "it ended during the call", cpuBefore: cpuBefore) { served || $0.isCrash }
        case .brokeProtocol(let detail):
            return end(request, started: started, status: .error, why: "it broke the serve protocol: \(detail)", cpuBefore: cpuBefore) { _ in true }
        case .answerTooLarge(let detail):
            return end(request, started: started, status: .error, why: "its answer is too large: \(detail)", cpuBefore: cpuBefore) { _ in false }
        }
    }

    /// Kills every runtime but `method`'s.
    mutating func killAll(except method: String? = nil) {
        for (name, runtime) in running where name != method {
            _ = runtime.kill()
            running[name] = nil
        }
    }

    /// Records a runtime's exit when the agent's orphan reaper collected it.
    mutating func noteReaped(pid: pid_t, status: Int32) {
        for runtime in running.values where runtime.pid == pid {
            runtime.noteReaped(status: status)
        }
    }

    /// Kills and reaps the runtime of `request`'s method after a call that ended it, and makes
    /// the call's result (the runtime starts again at the next call); `crashed` judges, from how the
    /// runtime ended, whether that was a crash.
    private mutating func end(
        _ request: GuestFrame.ExecRequest, started: UInt64, status: GuestFrame.ExecStatus, why: String, cpuBefore: UInt64?,
        crashed: (WaitStatus) -> Bool = { _ in false }
    ) -> GuestFrame.ExecResult {
        guard let runtime = running.removeValue(forKey: request.method) else {
            return result(request, started: started, status: status, exitCode: 1, stderr: "serve: \(why)")
        }
        let rss = runtime.readPeakRSSKB()
        let cpuAfter = runtime.cpuMicroseconds()
        let tail = runtime.takeStderrTail()
        let waitStatus = WaitStatus(raw: runtime.kill())
        let exitCode = waitStatus.exitCode
        let message = "kiln-agent: serve runtime of \(request.method) (pid \(runtime.pid), \(runtime.calls) calls answered): \(why); process group killed, it restarts at the next call"
        var answer = result(request, started: started, status: status, exitCode: exitCode,
                            stderr: tail + (tail.isEmpty ? "" : "\n") + message)
        answer.maxrssKB = rss
        answer.crashed = crashed(waitStatus)
        if let cpuBefore, let cpuAfter { answer.cpuUs = cpuAfter &- min(cpuBefore, cpuAfter) }
        return answer
    }

    private func result(
        _ request: GuestFrame.ExecRequest, started: UInt64, status: GuestFrame.ExecStatus, output: [UInt8] = [],
        exitCode: Int32, stderr: String, reportRSS: Bool = false
    ) -> GuestFrame.ExecResult {
        let execUs = monotonicMicroseconds() - started
        let rss = reportRSS ? running[request.method]?.peakRSSKB() ?? 0 : 0
        return GuestFrame.ExecResult(
            id: request.id, status: status, output: output, exitCode: exitCode, stderr: stderr, execUs: execUs, maxrssKB: rss)
    }
}
