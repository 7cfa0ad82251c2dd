/// A message on the channel between the host and `kiln-agent` inside a VM. Each is a MessagePack
/// map with a `type` key, sent in a length-prefixed frame (see ``FrameBuffer``).
public enum GuestFrame: Sendable, Equatable {
    /// Agent → host, once it is up (and again after every snapshot restore).
    case hello(Hello)
    /// Host → agent: run a method program.
    case exec(ExecRequest)
    /// Host → agent: run several calls one after another, answered by one `result` each, in
    /// order, as each finishes.
    case execBatch(ExecBatch)
    /// Agent → host: how an `exec` ended.
    case result(ExecResult)
    /// Host → agent: are you there?
    case ping
    /// Agent → host: the answer to `ping`.
    case pong(Pong)
    /// Host → agent: kill leftovers and wipe scratch space before the next use.
    case reset(Reset)
    /// Agent → host: the reset is done.
    case resetOK
    /// Host → agent: power off.
    case shutdown
    /// Agent → host: a frame could not be understood or served; the agent keeps running.
    case error(GuestError)

    /// The `type` value on the wire.
    public var type: String {
        switch self {
        case .hello: return "hello"
        case .exec: return "exec"
        case .execBatch: return "exec-batch"
        case .result: return "result"
        case .ping: return "ping"
        case .pong: return "pong"
        case .reset: return "reset"
        case .resetOK: return "reset-ok"
        case .shutdown: return "shutdown"
        case .error: return "error"
        }
    }
}

extension GuestFrame {
    /// The agent's greeting.
    public struct Hello: Codable, Sendable, Equatable {
        public var agentVersion: String
        /// Guest uptime, in microseconds.
        public var uptimeUs: UInt64
        public var vcpus: UInt32
        public var memoryMB: UInt32

        public init(agentVersion: String, uptimeUs: UInt64, vcpus: UInt32, memoryMB: UInt32) {
            self.agentVersion = agentVersion
            self.uptimeUs = uptimeUs
            self.vcpus = vcpus
            self.memoryMB = memoryMB
        }

        enum CodingKeys: String, CodingKey {
            case agentVersion = "agent_version"
            case uptimeUs = "uptime_us"
            case vcpus
            case memoryMB = "memory_mb"
        }

        /// Whether the agent takes `exec-batch` (version 0.2 on); an older agent is sent its
        /// calls one by one.
        public var takesBatches: Bool {
            let parts = agentVersion.split(separator: ".").prefix(2).map { Int($0) ?? 0 }
            guard parts.count == 2 else { return false }
            return parts[0] > 0 || parts[1] >= 2
        }
    }

    /// Run `entry` with `payload` on its stdin, under `deadlineMs`.
    public struct ExecRequest: Codable, Sendable, Equatable {
        public var id: String
        public var method: String
        /// The program and its arguments, as `execve` takes them.
        public var entry: [String]
        /// The MessagePack map `{args, context}` the program reads on stdin.
        public var payload: [UInt8]
        /// At most ``maxDeadlineMs``: a longer one is held to it, so that no timer set from it
        /// overflows, in the host or in the agent.
        public var deadlineMs: UInt64
        /// After sending the result, the agent resets the guest as `reset {keep_runtime: true}`
        /// would, before it reads the next frame: the pool's reset without its round trip.
        /// Optional on the wire (`reset_after`), written only when true.
        public var resetAfter: Bool

        public init(id: String, method: String, entry: [String], payload: [UInt8], deadlineMs: UInt64, resetAfter: Bool = false) {
            self.id = id
            self.method = method
            self.entry = entry
            self.payload = payload
            self.deadlineMs = min(deadlineMs, Self.maxDeadlineMs)
            self.resetAfter = resetAfter
        }

        /// The longest deadline an exec runs under: a day.
        public static let maxDeadlineMs: UInt64 = 86_400_000

        enum CodingKeys: String, CodingKey {
            case id, method, entry, payload
            case deadlineMs = "deadline_ms"
            case resetAfter = "reset_after"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            id = try container.decode(String.self, forKey: .id)
            method = try container.decode(String.self, forKey: .method)
            entry = try container.decode([String].self, forKey: .entry)
            payload = try container.decode([UInt8].self, forKey: .payload)
            deadlineMs = min(try container.decode(UInt64.self, forKey: .deadlineMs), Self.maxDeadlineMs)
            resetAfter = try container.decodeIfPresent(Bool.self, forKey: .resetAfter) ?? false
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(method, forKey: .method)
            try container.encode(entry, forKey: .entry)
            try container.encode(payload, forKey: .payload)
            try container.encode(deadlineMs, forKey: .deadlineMs)
            if resetAfter { try container.encode(true, forKey: .resetAfter) }
        }
    }

    /// Calls the agent runs in order, as if each came in an `exec` frame of its own (scratch
    /// wiped between them when they ask for `reset_after`), in one frame: under load, one wake of
    /// the guest for several invocations instead of one each. A call that ends the VM's use (a
    /// timeout, a crash, or a reset that fails) ends the batch: the calls after it are answered
    /// `not_run`, and the host runs them elsewhere. Agents from version 0.2 take it (see
    /// ``Hello/takesBatches``).
    public struct ExecBatch: Codable, Sendable, Equatable {
        public var calls: [ExecRequest]

        public init(calls: [ExecRequest]) {
            self.calls = calls
        }

        /// The most calls one batch carries; a longer one is refused.
        public static let maxCalls = 64

        enum CodingKeys: String, CodingKey {
            case calls
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            calls = try container.decode([ExecRequest].self, forKey: .calls)
            guard calls.count <= Self.maxCalls else {
                throw WireError.invalidValue("a batch holds at most \(Self.maxCalls) calls, not \(calls.count)", path: "calls")
            }
        }
    }

    /// How an exec ended inside the guest.
    public enum ExecStatus: String, Codable, Sendable, CaseIterable {
        /// Exited 0.
        case ok
        /// Exited non-zero, was killed by a signal, or could not start.
        case error
        /// Ran past its deadline; its process group was killed.
        case timeout
    }

    /// The program's outcome.
    public struct ExecResult: Codable, Sendable, Equatable {
        public var id: String
        public var status: ExecStatus
        /// The program's stdout: the MessagePack map `{output, context?}` when it succeeded.
        public var output: [UInt8]
        /// The exit code, or 128 + the signal number when a signal ended it.
        public var exitCode: Int32
        /// The tail of the program's stderr.
        public var stderr: String
        /// Wall time from spawn to exit, in microseconds.
        public var execUs: UInt64
        /// The program's peak resident set, in KiB.
        public var maxrssKB: UInt64
        /// The CPU time the method used in the guest (user + system), in microseconds: from
        /// `wait4` for a program, from the runtime's own counters across the call in serve mode
        /// (in the kernel's clock ticks, 10 ms). Optional on the wire (`cpu_us`): agents before 0.3
        /// leave it out.
        public var cpuUs: UInt64?
        /// The agent resets the guest before it reads the next frame, as the request's
        /// `reset_after` asked. An agent that does not know `reset_after` leaves it out, and the
        /// host then resets the VM itself. Optional on the wire (`reset_pending`), written only when true.
        public var resetPending: Bool
        /// The method did not just fail, it crashed: a crash signal (SIGSEGV, SIGABRT, …; not
        /// SIGKILL) ended its process, or its serve runtime died after serving calls or broke the
        /// protocol during the call. What it left in the guest is suspect. Optional on the wire (`crashed`), written only when true.
        public var crashed: Bool
        /// The guest's out-of-memory killer ended the method: it needs more memory than its VM
        /// has. Optional on the wire (`oom`), written only when true.
        public var outOfMemory: Bool
        /// The error a serve-mode runtime answered the call with: the method ran, reported a
        /// failure, and its runtime keeps serving (no process exited). Optional on the wire
        /// (`method_error`), written only when there is one.
        public var methodError: String?
        /// A serve-mode call that had to wait for its method's runtime to start: none was running
        /// (not started warm, or ended since), or it had not yet said it was ready; false when a
        /// ready one took it. Optional on the wire (`runtime_started`), written only when true.
        public var runtimeStarted: Bool
        /// The call came in a batch whose VM an earlier call ended (a timeout, a crash): the
        /// agent did not run it, and it may run elsewhere. Optional on the wire (`not_run`),
        /// written only when true.
        public var notRun: Bool

        public init(
            id: String, status: ExecStatus, output: [UInt8], exitCode: Int32, stderr: String,
            execUs: UInt64, maxrssKB: UInt64, resetPending: Bool = false, crashed: Bool = false, outOfMemory: Bool = false,
            methodError: String? = nil, runtimeStarted: Bool = false, notRun: Bool = false, cpuUs: UInt64? = nil
        ) {
            self.id = id
            self.status = status
            self.output = output
            self.exitCode = exitCode
            self.stderr = stderr
            self.execUs = execUs
            self.maxrssKB = maxrssKB
            self.resetPending = resetPending
            self.crashed = crashed
            self.outOfMemory = outOfMemory
            self.methodError = methodError
            self.runtimeStarted = runtimeStarted
            self.notRun = notRun
            self.cpuUs = cpuUs
        }

        /// The answer to a batch's call the agent did not run.
        public static func notRun(_ id: String) -> ExecResult {
            ExecResult(id: id, status: .error, output: [], exitCode: -1,
                       stderr: "not run: an earlier call of its batch ended the VM's use", execUs: 0, maxrssKB: 0, notRun: true)
        }

        enum CodingKeys: String, CodingKey {
            case id, status, output
            case exitCode = "exit_code"
            case stderr
            case execUs = "exec_us"
            case maxrssKB = "maxrss_kb"
            case resetPending = "reset_pending"
            case crashed
            case outOfMemory = "oom"
            case methodError = "method_error"
            case runtimeStarted = "runtime_started"
            case notRun = "not_run"
            case cpuUs = "cpu_us"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            id = try container.decode(String.self, forKey: .id)
            status = try container.decode(ExecStatus.self, forKey: .status)
            output = try container.decode([UInt8].self, forKey: .output)
            exitCode = try container.decode(Int32.self, forKey: .exitCode)
            stderr = try container.decode(String.self, forKey: .stderr)
            execUs = try container.decode(UInt64.self, forKey: .execUs)
            maxrssKB = try container.decode(UInt64.self, forKey: .maxrssKB)
            resetPending = try container.decodeIfPresent(Bool.self, forKey: .resetPending) ?? false
            crashed = try container.decodeIfPresent(Bool.self, forKey: .crashed) ?? false
            outOfMemory = try container.decodeIfPresent(Bool.self, forKey: .outOfMemory) ?? false
            methodError = try container.decodeIfPresent(String.self, forKey: .methodError)
            runtimeStarted = try container.decodeIfPresent(Bool.self, forKey: .runtimeStarted) ?? false
            notRun = try container.decodeIfPresent(Bool.self, forKey: .notRun) ?? false
            cpuUs = try container.decodeIfPresent(UInt64.self, forKey: .cpuUs)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(status, forKey: .status)
            try container.encode(output, forKey: .output)
            try container.encode(exitCode, forKey: .exitCode)
            try container.encode(stderr, forKey: .stderr)
            try container.encode(execUs, forKey: .execUs)
            try container.encode(maxrssKB, forKey: .maxrssKB)
            if resetPending { try container.encode(true, forKey: .resetPending) }
            if crashed { try container.encode(true, forKey: .crashed) }
            if outOfMemory { try container.encode(true, forKey: .outOfMemory) }
            if let methodError { try container.encode(methodError, forKey: .methodError) }
            if runtimeStarted { try container.encode(true, forKey: .runtimeStarted) }
            if notRun { try container.encode(true, forKey: .notRun) }
            if let cpuUs { try container.encode(cpuUs, forKey: .cpuUs) }
        }
    }

    /// The agent's answer to `ping`.
    public struct Pong: Codable, Sendable, Equatable {
        public var uptimeUs: UInt64
        /// One-minute load average.
        public var load1: Double
        public var memAvailableKB: UInt64

        public init(uptimeUs: UInt64, load1: Double, memAvailableKB: UInt64) {
            self.uptimeUs = uptimeUs
            self.load1 = load1
            self.memAvailableKB = memAvailableKB
        }

        enum CodingKeys: String, CodingKey {
            case uptimeUs = "uptime_us"
            case load1
            case memAvailableKB = "mem_available_kb"
        }
    }

    /// How much a reset clears.
    public struct Reset: Codable, Sendable, Equatable {
        /// Keep the serve-mode runtime of the method that ran last, and what it started: the next
        /// call of that method reuses it, a call of any other method kills it first. Optional on
        /// the wire (`keep_runtime`), written only when true; false clears everything.
        public var keepRuntime: Bool

        public init(keepRuntime: Bool = false) {
            self.keepRuntime = keepRuntime
        }

        enum CodingKeys: String, CodingKey {
            case keepRuntime = "keep_runtime"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            keepRuntime = try container.decodeIfPresent(Bool.self, forKey: .keepRuntime) ?? false
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            if keepRuntime { try container.encode(true, forKey: .keepRuntime) }
        }
    }

    /// Why the agent could not serve a frame.
    public struct GuestError: Codable, Sendable, Equatable {
        public var message: String

        public init(message: String) {
            self.message = message
        }
    }
}

extension GuestFrame: Codable {
    enum CodingKeys: String, CodingKey {
        case version = "v"
        case type
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        _ = try container.decode(WireVersion.self, forKey: .version)
        let type = try container.decode(String.self, forKey: .type)
        switch type {
        case "hello": self = .hello(try Hello(from: decoder))
        case "exec": self = .exec(try ExecRequest(from: decoder))
        case "exec-batch": self = .execBatch(try ExecBatch(from: decoder))
        case "result": self = .result(try ExecResult(from: decoder))
        case "ping": self = .ping
        case "pong": self = .pong(try Pong(from: decoder))
        case "reset": self = .reset(try Reset(from: decoder))
        case "reset-ok": self = .resetOK
        case "shutdown": self = .shutdown
        case "error": self = .error(try GuestError(from: decoder))
        default: throw WireError.invalidValue("unknown guest frame type '\(type)'", path: "type")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(WireVersion.v1, forKey: .version)
        try container.encode(type, forKey: .type)
        switch self {
        case .hello(let fields): try fields.encode(to: encoder)
        case .exec(let fields): try fields.encode(to: encoder)
        case .execBatch(let fields): try fields.encode(to: encoder)
        case .result(let fields): try fields.encode(to: encoder)
        case .pong(let fields): try fields.encode(to: encoder)
        case .error(let fields): try fields.encode(to: encoder)
        case .reset(let fields): try fields.encode(to: encoder)
        case .ping, .resetOK, .shutdown: break
        }
    }
}
