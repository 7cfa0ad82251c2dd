import Glibc
import KilnWire
import Logging

/// Requests to one VM's agent, one at a time, each under a deadline; channel failures become
/// ``VMError``s that name the VM and the step. Shared by every driver.
public actor AgentSession {
    public let vmID: String
    private let channel: GuestChannel
    private let logger: Logger
    /// Tells whether the VM's process has ended, and how (for error messages).
    private let deathCheck: @Sendable () async -> String?
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private var sequence: UInt64 = 0

    /// The agent's latest greeting.
    public private(set) var hello: GuestFrame.Hello?

    public init(vmID: String, channel: GuestChannel, logger: Logger, deathCheck: @escaping @Sendable () async -> String?) {
        self.vmID = vmID
        self.channel = channel
        self.logger = logger
        self.deathCheck = deathCheck
    }

    /// Waits for the agent's `hello`.
    @discardableResult
    public func awaitHello(within timeout: Duration, step: String) async throws(VMError) -> GuestFrame.Hello {
        try await exclusive { () async throws(VMError) -> GuestFrame.Hello in
            let frame = try await receive(until: .now + timeout, timeout: timeout, step: step)
            guard case .hello(let greeting) = frame else {
                throw .protocolViolation(vm: vmID, detail: "expected hello during \(step), got \(frame.type)")
            }
            hello = greeting
            return greeting
        }
    }

    /// Runs a method program; the host waits `deadline + grace` before it gives up on the VM.
    public func exec(_ request: GuestFrame.ExecRequest, grace: Duration) async throws(VMError) -> GuestFrame.ExecResult {
        let timeout = Duration.milliseconds(Int64(clamping: request.deadlineMs)) + grace
        return try await exclusive { () async throws(VMError) -> GuestFrame.ExecResult in
            let deadline = ContinuousClock.now + timeout
            try await send(.exec(request), until: deadline, timeout: timeout, step: "exec \(request.method)")
            let frame = try await receive(until: deadline, timeout: timeout, step: "exec \(request.method)")
            switch frame {
            case .result(let result) where result.id == request.id:
                return result
            case .error(let error):
                throw .agentError(vm: vmID, message: error.message)
            default:
                throw .protocolViolation(vm: vmID, detail: "expected the result of \(request.id), got \(frame.type)")
            }
        }
    }

    /// Runs calls in one `exec-batch` frame; `each` gets every call's outcome in order as its
    /// result arrives. The host waits for each result at most its call's `deadline + grace` after
    /// the one before. A failure (the VM timed out, died or broke the protocol) is the outcome of
    /// the call it happened in, and the calls after it get none: they did not run.
    /// - Returns: the failure that ended the batch, if one did.
    @discardableResult
    public func execBatch(
        _ requests: [GuestFrame.ExecRequest], grace: Duration,
        each: @Sendable (Int, Result<GuestFrame.ExecResult, VMError>) async -> Void
    ) async -> VMError? {
        guard !requests.isEmpty else { return nil }
        do throws(VMError) {
            try await exclusive { () async throws(VMError) in
                let step = "exec-batch \(requests[0].method) ×\(requests.count)"
                // Whether a call ended the batch (a timeout, a crash, a reset that failed): the
                // agent then runs none of the rest.
                var ended = false
                for (index, request) in requests.enumerated() {
                    let timeout = Duration.milliseconds(Int64(clamping: request.deadlineMs)) + grace
                    let deadline = ContinuousClock.now + timeout
                    do throws(VMError) {
                        if index == 0 {
                            try await send(.execBatch(.init(calls: requests)), until: deadline, timeout: timeout, step: step)
                        }
                        let frame = try await receive(until: deadline, timeout: timeout, step: step)
                        switch frame {
                        case .result(let result) where result.id == request.id:
                            // The first call always runs; once one ended the batch, none runs.
                            guard result.notRun ? index > 0 : !ended else {
                                throw .protocolViolation(
                                    vm: vmID, detail: "call \(index) of a batch answered \(result.notRun ? "not_run first" : "after the batch ended")")
                            }
                            ended = ended || result.notRun || result.status == .timeout || result.crashed
                            await each(index, .success(result))
                        case .error(let error):
                            throw .agentError(vm: vmID, message: error.message)
                        default:
                            throw .protocolViolation(vm: vmID, detail: "expected the result of \(request.id), got \(frame.type)")
                        }
                    } catch {
                        await each(index, .failure(error))
                        throw error
                    }
                }
            }
        } catch {
            // Reported to `each` as well, as the outcome of the call it ended.
            return error
        }
        return nil
    }

    /// Asks the agent to kill leftovers and wipe scratch space.
    /// - Parameter keepRuntime: keep the serve-mode runtime of the method that ran last.
    public func reset(keepRuntime: Bool = false, timeout: Duration) async throws(VMError) {
        try await exclusive { () async throws(VMError) in
            let deadline = ContinuousClock.now + timeout
            try await send(.reset(.init(keepRuntime: keepRuntime)), until: deadline, timeout: timeout, step: "reset")
            let frame = try await receive(until: deadline, timeout: timeout, step: "reset")
            switch frame {
            case .resetOK: return
            // The agent could not clear the guest (a process outlived every kill): the VM is of
            // no further use, and the error that says so ends it.
            case .error(let error): throw .protocolViolation(vm: vmID, detail: "reset failed: \(error.message)")
            default: throw .protocolViolation(vm: vmID, detail: "expected reset-ok, got \(frame.type)")
            }
        }
    }

    /// Round trip to the agent.
    public func ping(timeout: Duration) async throws(VMError) -> GuestFrame.Pong {
        try await exclusive { () async throws(VMError) -> GuestFrame.Pong in
            let deadline = ContinuousClock.now + timeout
            try await send(.ping, until: deadline, timeout: timeout, step: "ping")
            let frame = try await receive(until: deadline, timeout: timeout, step: "ping")
            guard case .pong(let pong) = frame else {
                throw .protocolViolation(vm: vmID, detail: "expected pong, got \(frame.type)")
            }
            return pong
        }
    }

    /// Sends raw bytes and returns the next frame (for tests of the agent's error handling).
    public func rawRequest(_ bytes: [UInt8], timeout: Duration) async throws(VMError) -> GuestFrame {
        try await exclusive { () async throws(VMError) -> GuestFrame in
            let deadline = ContinuousClock.now + timeout
            try await sendRaw(bytes, until: deadline, timeout: timeout)
            return try await receive(until: deadline, timeout: timeout, step: "raw request")
        }
    }

    /// Closes the channel; pending requests fail.
    public func close() async {
        await channel.close()
    }

    private func send(_ frame: GuestFrame, until deadline: ContinuousClock.Instant, timeout: Duration, step: String)
        async throws(VMError)
    {
        do {
            try await channel.send(frame, until: deadline)
        } catch {
            throw await translate(error, step: step, timeout: timeout)
        }
    }

    private func sendRaw(_ bytes: [UInt8], until deadline: ContinuousClock.Instant, timeout: Duration) async throws(VMError) {
        do {
            try await channel.sendRaw(bytes, until: deadline)
        } catch {
            throw await translate(error, step: "raw request", timeout: timeout)
        }
    }

    private func receive(until deadline: ContinuousClock.Instant, timeout: Duration, step: String)
        async throws(VMError) -> GuestFrame
    {
        do {
            return try await channel.receive(until: deadline)
        } catch {
            throw await translate(error, step: step, timeout: timeout)
        }
    }

    private func translate(_ error: GuestChannel.Failure, step: String, timeout: Duration) async -> VMError {
        switch error {
        case .timedOut:
            return .timedOut(vm: vmID, step: step, after: timeout, detail: "")
        case .closed:
            // Give the process a moment to be reaped so the message can say how it ended (up to
            // a second: on a busy 2-core host the reaper can take longer than 100 ms).
            for _ in 0..<200 {
                if let death = await deathCheck() { return .vmDied(vm: vmID, during: step, detail: death) }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return .vmDied(vm: vmID, during: step, detail: "the guest channel closed")
        case .malformed(let wire):
            return .protocolViolation(vm: vmID, detail: "\(wire)")
        case .io(let code):
            return .hostFailure("VM \(vmID): channel I/O failed during \(step): \(String(cString: strerror(code)))")
        }
    }

    /// Runs `body` when no other request is in flight (FIFO).
    private func exclusive<Result: Sendable>(_ body: () async throws(VMError) -> Result) async throws(VMError) -> Result {
        if busy {
            await withCheckedContinuation { waiting.append($0) }
        }
        busy = true
        defer {
            if waiting.isEmpty {
                busy = false
            } else {
                waiting.removeFirst().resume()
            }
        }
        return try await body()
    }
}
