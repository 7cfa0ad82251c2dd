import Foundation

/// Everything a worker is configured with: one YAML file, with `KILN_*` environment variables
/// over it, validated at start. Every field has a default; see `deploy/worker.yaml`.
///
/// An environment variable names a field by its path, upper-cased, with `_` between the parts:
/// `KILN_AMQP_URL` sets `amqp.url`, `KILN_METRICS_LISTEN` sets `metrics.listen`,
/// `KILN_POOL_MEMORY_RESERVE_MB` sets `pool.memory_reserve_mb`.
public struct WorkerConfiguration: Codable, Sendable, Equatable {
    public struct Worker: Codable, Sendable, Equatable {
        /// This worker's name in results and telemetry; empty for the host name and PID.
        public var name = ""
        /// The host name in telemetry routing keys; empty for the machine's.
        public var host = ""
    }

    public struct AMQP: Codable, Sendable, Equatable {
        /// The broker: one URL, or the nodes of a cluster (a YAML list, or URLs separated by
        /// commas, as `KILN_AMQP_URL` gives them); connections move to another node when theirs
        /// dies.
        public var url = "amqp://guest:guest@127.0.0.1:5672/%2f"
        /// The prefix of the topology's names (`kiln` → `kiln.invoke`, `kiln.invocations`, …).
        public var prefix = "kiln"
        /// Unsettled deliveries at most; 0 derives it from the pools' capacity.
        public var prefetch = 0
        public var heartbeatSeconds = 10
        /// Result and telemetry publishes awaiting confirmation at most.
        public var publishWindow = 512
        /// Deliveries of one invocation before the broker dead-letters it.
        public var deliveryLimit = 5

        enum CodingKeys: String, CodingKey {
            case url, prefix, prefetch
            case heartbeatSeconds = "heartbeat_s"
            case publishWindow = "publish_window"
            case deliveryLimit = "delivery_limit"
        }
    }

    /// Which backend runs the VMs.
    public enum Backend: String, Codable, Sendable, CaseIterable {
        /// QEMU where it is installed, else the process sandbox.
        case auto
        /// QEMU micro-VMs.
        case qemu
        /// The process sandbox (namespaces and a cgroup, no VM).
        case process

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let backend = Backend(rawValue: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "must be auto, qemu or process, not \(text)"))
            }
            self = backend
        }
    }

    /// Which latency model places invocations.
    public enum Model: String, Codable, Sendable, CaseIterable {
        /// The learned model (`LearnedPredictor`); `rls`, its former name, reads as this.
        case ridge
        /// Moving averages per method and VM kind.
        case ewma

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let model = text == "rls" ? .ridge : Model(rawValue: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "must be ridge or ewma, not \(text)"))
            }
            self = model
        }
    }

    public struct VM: Codable, Sendable, Equatable {
        /// `qemu`, `process`, or `auto` (qemu where it works, else process).
        public var backend = Backend.auto
        /// Where built guest images and templates are kept.
        public var imageCache = ".local/images"
        /// The guest image to run; empty for `<image_cache>/current`, which `kiln image build` links.
        public var image = ""

        /// The image the worker runs: `image`, else `<image_cache>/current`.
        public var imagePath: String { image.isEmpty ? imageCache + "/current" : image }

        enum CodingKeys: String, CodingKey {
            case backend, image
            case imageCache = "image_cache"
        }
    }

    public struct Profile: Codable, Sendable, Equatable {
        public var vcpus = 1
        public var memoryMB = 128
        /// Idle VMs kept even without demand.
        public var minIdle = 1
        /// The idle target's ceiling, whatever demand and the forecast ask for; 0 turns
        /// pre-warming off (VMs back from a run still wait out their idle TTL).
        public var maxIdle = 8
        /// VMs of this profile at most, idle and busy.
        public var maxTotal = 8
        /// The CPU quota a VM starts with, in cores; 0 for one core per vCPU.
        public var cpuShare = 0.0
        /// The most memory the adaptive allocator may give a VM of this profile while it runs, MiB;
        /// 0 for the default: twice `memory_mb` in the process sandbox, `memory_mb` (fixed) for
        /// QEMU. Above `memory_mb`, a QEMU guest boots with this much RAM and a balloon holds all
        /// but `memory_mb` of it; the host's memory reserve counts it whole.
        public var maxMemoryMB = 0

        enum CodingKeys: String, CodingKey {
            case vcpus
            case memoryMB = "memory_mb"
            case minIdle = "min_idle"
            case maxIdle = "max_idle"
            case maxTotal = "max_total"
            case cpuShare = "cpu_share"
            case maxMemoryMB = "max_memory_mb"
        }
    }

    public struct Pool: Codable, Sendable, Equatable {
        /// Host memory never planned for VMs.
        public var memoryReserveMB = 1_024
        /// Idle CPU, in cores, below which the pool provisions no more.
        public var cpuReserveCores = 0.25
        /// Seconds between pool sizing decisions.
        public var sizingIntervalSeconds = 2.0
        /// Seconds of demand the sizing looks back on.
        public var demandWindowSeconds = 30.0
        /// VMs provisioned at the same time at most.
        public var provisionConcurrency = 2
        /// VMs working at once (running or being reset) while the host's CPU is 90% busy or
        /// more; 0: one per host core.
        public var saturatedBusyLimit = 0
        /// The most invocations of one method sent to one VM in one frame, when they wait for
        /// VMs together: one wake of the guest for all of them. 1 sends each alone.
        public var batchCalls = 8
        /// The predicted run time of one batch's calls together at most, ms: the longest a call
        /// waits behind the others of its batch. Methods predicted to run longer than this go alone.
        public var batchWindowMs: UInt64 = 50

        enum CodingKeys: String, CodingKey {
            case memoryReserveMB = "memory_reserve_mb"
            case cpuReserveCores = "cpu_reserve_cores"
            case sizingIntervalSeconds = "sizing_interval_s"
            case demandWindowSeconds = "demand_window_s"
            case provisionConcurrency = "provision_concurrency"
            case saturatedBusyLimit = "saturated_busy_limit"
            case batchCalls = "batch_calls"
            case batchWindowMs = "batch_window_ms"
        }
    }

    public struct Lifecycle: Codable, Sendable, Equatable {
        /// Invocations a VM runs before it is destroyed.
        public var maxUses = 10_000
        /// Seconds an idle VM is kept beyond the pool's target (the forecast keeps VMs warm for
        /// expected bursts; this only stops the pool from thrashing).
        public var idleTTLSeconds = 10.0
        /// Destroy a VM whose method failed (non-zero exit, an error its runtime reported)
        /// instead of resetting it. A failure leaves nothing the reset does not clear, as in
        /// Lambda or OpenWhisk, so the VM is kept by default.
        public var destroyOnError = false
        /// Destroy a VM whose method crashed (a crash signal such as SIGSEGV, a serve runtime that
        /// died after serving calls or broke the protocol mid-call): it is tainted.
        public var destroyOnCrash = true

        enum CodingKeys: String, CodingKey {
            case maxUses = "max_uses"
            case idleTTLSeconds = "idle_ttl_s"
            case destroyOnError = "destroy_on_error"
            case destroyOnCrash = "destroy_on_crash"
        }
    }

    public struct Adaptive: Codable, Sendable, Equatable {
        /// Whether VMs' CPU and memory follow how their methods run.
        public var enabled = true
        /// Observed over predicted exec time from which an invocation counts as degraded.
        public var degradationRatio = 1.5
        /// Degraded invocations in a row before a VM gets more.
        public var sustained = 3
        public var cpuStep = 0.5
        /// The most CPU a VM may get, in cores; 0 for all of the host's.
        public var maxCPUs = 0.0
        /// Idle seconds after which a raised VM returns to its base allocation.
        public var relaxAfterSeconds = 30.0

        enum CodingKeys: String, CodingKey {
            case enabled
            case degradationRatio = "degradation_ratio"
            case sustained
            case cpuStep = "cpu_step"
            case maxCPUs = "max_cpus"
            case relaxAfterSeconds = "relax_after_s"
        }
    }

    /// Cross-host affinity: invocations with the same `affinity.key` go to the same worker of a
    /// fleet, through RabbitMQ's consistent-hash exchange (the `rabbitmq_consistent_hash_exchange`
    /// plugin must be enabled on the broker).
    public struct Affinity: Codable, Sendable, Equatable {
        /// Whether this worker takes part: it binds a queue of its own (`<prefix>.worker.<host>`)
        /// to `<prefix>.affinity` and forwards keyed invocations it has no VM warm for there.
        public var crossHost = false
        /// How long a forwarded invocation waits in its worker's queue before it goes back to the
        /// shared queue, where any worker runs it (its worker is gone, or too busy), ms.
        public var holdMs = 5_000

        enum CodingKeys: String, CodingKey {
            case crossHost = "cross_host"
            case holdMs = "hold_ms"
        }
    }

    public struct History: Codable, Sendable, Equatable {
        /// The SQLite database of finished invocations; empty keeps no history.
        public var path = ".local/history.sqlite"
        public var maxRecords = 200_000
        public var maxAgeDays = 14.0

        enum CodingKeys: String, CodingKey {
            case path
            case maxRecords = "max_records"
            case maxAgeDays = "max_age_days"
        }
    }

    public struct Predict: Codable, Sendable, Equatable {
        /// `ridge` (the learned model; `rls`, its former name, means the same) or `ewma` (moving averages).
        public var model = Model.ridge
        /// Train the model from the history at start.
        public var trainAtStart = true

        enum CodingKeys: String, CodingKey {
            case model
            case trainAtStart = "train_at_start"
        }
    }

    public struct Metrics: Codable, Sendable, Equatable {
        /// `host:port` for /metrics and /healthz; empty turns the server off.
        public var listen = "127.0.0.1:9464"
    }

    public struct Limits: Codable, Sendable, Equatable {
        /// Invocations waiting for a VM on this worker at most.
        public var localQueue = 256
        public var maxBodyBytes = 16 << 20
        public var maxDepth = 24
        /// The longest deadline an invocation may ask for (or a manifest give), ms: 15 minutes,
        /// as Lambda's. Longer, or 0, and the invocation is rejected.
        public var maxDeadlineMs: UInt64 = 900_000

        enum CodingKeys: String, CodingKey {
            case localQueue = "local_queue"
            case maxBodyBytes = "max_body_bytes"
            case maxDepth = "max_depth"
            case maxDeadlineMs = "max_deadline_ms"
        }
    }

    public var worker = Worker()
    public var amqp = AMQP()
    public var vm = VM()
    /// `small` for the static methods, `medium` (256 MiB, none kept idle without demand) for
    /// methods with a runtime such as Python.
    public var profiles: [String: Profile] = ["small": Profile(), "medium": Profile(memoryMB: 256, minIdle: 0, maxIdle: 4, maxTotal: 4)]
    public var pool = Pool()
    /// The default lifecycle, and per-method overrides under `methods`.
    public var lifecycle = Lifecycle()
    public var methodLifecycles: [String: Lifecycle] = [:]
    public var adaptive = Adaptive()
    public var affinity = Affinity()
    public var history = History()
    public var predict = Predict()
    public var metrics = Metrics()
    public var limits = Limits()

    enum CodingKeys: String, CodingKey {
        case worker, amqp, vm, profiles, pool, lifecycle
        case methodLifecycles = "method_lifecycles"
        case adaptive, affinity, history, predict, metrics, limits
    }

    public init() {}
}

/// A configuration that cannot be used, naming the field.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// The field's path, such as `profiles.small.memory_mb`.
    public let field: String
    public let problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "configuration field \(field): \(problem)" }
}
