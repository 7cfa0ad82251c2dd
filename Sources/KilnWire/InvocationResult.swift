/// The outcome of one invocation: published to `kiln.results` with routing key
/// `<method>.<status>`, and to the invocation's `reply_to` when it has one.
public struct InvocationResult: Codable, Sendable, Equatable {
    /// How an invocation ended.
    public enum Status: String, Codable, Sendable, CaseIterable {
        /// The method returned normally.
        case ok
        /// The method failed: it exited non-zero, crashed, or its VM failed.
        case error
        /// The method ran past its deadline and was killed.
        case timeout
        /// The worker refused the invocation, for example an unknown method.
        case rejected
    }

    /// Why an invocation did not end `ok`.
    public struct Failure: Codable, Sendable, Equatable {
        /// A short machine-readable kind, such as `exit`, `unknown_method` or `vm_crashed`.
        public var kind: String
        /// What happened, for a person.
        public var message: String
        /// The method program's exit code, when it exited.
        public var exitCode: Int32?
        /// The tail of the method program's stderr.
        public var stderr: String?

        /// Creates a failure.
        public init(kind: String, message: String, exitCode: Int32? = nil, stderr: String? = nil) {
            self.kind = kind
            self.message = message
            self.exitCode = exitCode
            self.stderr = stderr
        }

        enum CodingKeys: String, CodingKey {
            case kind, message
            case exitCode = "exit_code"
            case stderr
        }
    }

    /// The VM an invocation ran in.
    public struct Placement: Codable, Sendable, Equatable {
        /// The VM's id.
        public var id: String
        /// The driver: `qemu`, `process`, …
        public var backend: String
        /// The VM profile's name.
        public var profile: String
        /// Whether the VM was provisioned for this invocation rather than taken warm from a pool.
        public var cold: Bool
        /// How many invocations the VM ran before this one.
        public var reuseCount: UInt32

        /// Creates a placement.
        public init(id: String, backend: String, profile: String, cold: Bool, reuseCount: UInt32) {
            self.id = id
            self.backend = backend
            self.profile = profile
            self.cold = cold
            self.reuseCount = reuseCount
        }

        enum CodingKeys: String, CodingKey {
            case id, backend, profile, cold
            case reuseCount = "reuse_count"
        }
    }

    /// Where the time went, in microseconds.
    public struct Timing: Codable, Sendable, Equatable {
        /// From the producer's `submitted_at_us` to the worker's receipt, when known.
        public var queue: UInt64?
        /// Choosing a VM.
        public var schedule: UInt64
        /// Provisioning a VM; 0 when a warm one was used.
        public var provision: UInt64
        /// Running the method in the VM.
        public var exec: UInt64
        /// From receipt to the result being ready to publish.
        public var total: UInt64

        /// Creates a timing.
        public init(queue: UInt64? = nil, schedule: UInt64, provision: UInt64, exec: UInt64, total: UInt64) {
            self.queue = queue
            self.schedule = schedule
            self.provision = provision
            self.exec = exec
            self.total = total
        }
    }

    /// What an invocation consumed, as a pay-per-use bill counts it. Every field is optional:
    /// what the VM's agent or the backend could not measure is left out.
    public struct Usage: Codable, Sendable, Equatable {
        /// The method's own CPU time in the guest, user + system, microseconds.
        public var cpuUs: UInt64?
        /// The CPU time the VM used on the host over the call, user + system, microseconds: the
        /// emulation or virtualization the call cost the host, as the VM's cgroup counts it.
        public var hostCPUUs: UInt64?
        /// The method's peak resident memory, KiB.
        public var peakMemoryKB: UInt64?
        /// The bytes of the call the VM received (arguments and context, MessagePack).
        public var bytesIn: UInt64?
        /// The bytes the method answered with (output and context, MessagePack).
        public var bytesOut: UInt64?

        public init(
            cpuUs: UInt64? = nil, hostCPUUs: UInt64? = nil, peakMemoryKB: UInt64? = nil, bytesIn: UInt64? = nil, bytesOut: UInt64? = nil
        ) {
            self.cpuUs = cpuUs
            self.hostCPUUs = hostCPUUs
            self.peakMemoryKB = peakMemoryKB
            self.bytesIn = bytesIn
            self.bytesOut = bytesOut
        }

        enum CodingKeys: String, CodingKey {
            case cpuUs = "cpu_us"
            case hostCPUUs = "host_cpu_us"
            case peakMemoryKB = "peak_memory_kb"
            case bytesIn = "bytes_in"
            case bytesOut = "bytes_out"
        }
    }

    /// The wire version, `v`.
    public var version: WireVersion
    /// The invocation's id.
    public var id: String
    /// The invocation's method.
    public var method: String
    /// How the invocation ended.
    public var status: Status
    /// What the method returned.
    public var output: MessagePackValue?
    /// The execution context as the method left it.
    public var context: ExecutionContext?
    /// Why it did not end `ok`.
    public var error: Failure?
    /// 1, or more when the invocation was redelivered.
    public var attempt: UInt32
    /// The VM it ran in.
    public var vm: Placement?
    /// Where the time went.
    public var timing: Timing
    /// The latency the scheduler predicted, in microseconds.
    public var predictedUs: UInt64?
    /// The worker that ran it.
    public var worker: String
    /// The host id of that worker (`worker.host`, default the host name): which host of a fleet
    /// ran it. Absent from results of workers before fleets.
    public var host: String?
    /// Unix time when the result was made, in microseconds.
    public var finishedAtUs: UInt64
    /// What it consumed; absent when it did not run (refused, or no VM), and from workers
    /// before usage accounting.
    public var usage: Usage?

    /// Creates a result.
    public init(
        id: String,
        method: String,
        status: Status,
        output: MessagePackValue? = nil,
        context: ExecutionContext? = nil,
        error: Failure? = nil,
        attempt: UInt32 = 1,
        vm: Placement? = nil,
        timing: Timing,
        predictedUs: UInt64? = nil,
        worker: String,
        host: String? = nil,
        finishedAtUs: UInt64,
        usage: Usage? = nil
    ) {
        self.version = .v1
        self.id = id
        self.method = method
        self.status = status
        self.output = output
        self.context = context
        self.error = error
        self.attempt = attempt
        self.vm = vm
        self.timing = timing
        self.predictedUs = predictedUs
        self.worker = worker
        self.host = host
        self.finishedAtUs = finishedAtUs
        self.usage = usage
    }

    /// The routing key on `kiln.results`: `<method>.<status>`.
    public var routingKey: String { "\(method).\(status.rawValue)" }

    enum CodingKeys: String, CodingKey {
        case version = "v"
        case id, method, status, output, context, error, attempt, vm
        case timing = "timing_us"
        case predictedUs = "predicted_us"
        case worker, host
        case finishedAtUs = "finished_at_us"
        case usage
    }
}
