/// An event on the `kiln.telemetry` exchange, routed by `<kind>.<host>`.
///
/// On the wire it is one flat map: the common fields (`v`, `kind`, `host`, `worker`, `at_us`)
/// beside the fields of its kind.
public struct TelemetryEvent: Codable, Sendable, Equatable {
    /// What happened, with the fields of its kind.
    public enum Payload: Sendable, Equatable {
        case vmCreated(VMCreated)
        case vmDestroyed(VMDestroyed)
        case vmReallocated(VMReallocated)
        case poolResized(PoolResized)
        case invocationCompleted(InvocationCompleted)
        case hostSample(HostSample)
        /// A kind this code does not know, kept with its own fields (all but the common ones).
        case unknown(kind: String, fields: MessagePackValue)

        /// The kind as it appears on the wire and in routing keys.
        public var kind: String {
            switch self {
            case .vmCreated: return "vm.created"
            case .vmDestroyed: return "vm.destroyed"
            case .vmReallocated: return "vm.reallocated"
            case .poolResized: return "pool.resized"
            case .invocationCompleted: return "invocation.completed"
            case .hostSample: return "host.sample"
            case .unknown(let kind, _): return kind
            }
        }
    }

    /// The wire version, `v`.
    public var version: WireVersion
    /// The host the worker runs on.
    public var host: String
    /// The worker's name.
    public var worker: String
    /// Unix time of the event, in microseconds.
    public var atUs: UInt64
    /// What happened.
    public var payload: Payload

    /// Creates an event.
    public init(host: String, worker: String, atUs: UInt64, payload: Payload) {
        self.version = .v1
        self.host = host
        self.worker = worker
        self.atUs = atUs
        self.payload = payload
    }

    /// The routing key on `kiln.telemetry`: `<kind>.<host>`.
    public var routingKey: String { "\(payload.kind).\(host)" }

    enum CodingKeys: String, CodingKey {
        case version = "v"
        case kind, host, worker
        case atUs = "at_us"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        version = try container.decode(WireVersion.self, forKey: .version)
        host = try container.decode(String.self, forKey: .host)
        worker = try container.decode(String.self, forKey: .worker)
        atUs = try container.decode(UInt64.self, forKey: .atUs)
        let kind = try container.decode(String.self, forKey: .kind)
        switch kind {
        case "vm.created": payload = .vmCreated(try VMCreated(from: decoder))
        case "vm.destroyed": payload = .vmDestroyed(try VMDestroyed(from: decoder))
        case "vm.reallocated": payload = .vmReallocated(try VMReallocated(from: decoder))
        case "pool.resized": payload = .poolResized(try PoolResized(from: decoder))
        case "invocation.completed": payload = .invocationCompleted(try InvocationCompleted(from: decoder))
        case "host.sample": payload = .hostSample(try HostSample(from: decoder))
        default:
            guard case .map(let entries) = try MessagePackValue(from: decoder) else {
                throw WireError.typeMismatch(expected: "map", found: "other", path: "")
            }
            let own = entries.filter { entry in entry.key.stringValue.flatMap(CodingKeys.init(stringValue:)) == nil }
            payload = .unknown(kind: kind, fields: .map(own))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(version, forKey: .version)
        try container.encode(payload.kind, forKey: .kind)
        try container.encode(host, forKey: .host)
        try container.encode(worker, forKey: .worker)
        try container.encode(atUs, forKey: .atUs)
        switch payload {
        case .vmCreated(let fields): try fields.encode(to: encoder)
        case .vmDestroyed(let fields): try fields.encode(to: encoder)
        case .vmReallocated(let fields): try fields.encode(to: encoder)
        case .poolResized(let fields): try fields.encode(to: encoder)
        case .invocationCompleted(let fields): try fields.encode(to: encoder)
        case .hostSample(let fields): try fields.encode(to: encoder)
        case .unknown(_, let fields):
            guard case .map(let entries) = fields else { return }
            var extra = encoder.container(keyedBy: IndexOrNameKey.self)
            for entry in entries {
                guard let key = entry.key.stringValue, CodingKeys(stringValue: key) == nil else { continue }
                try extra.encode(entry.value, forKey: IndexOrNameKey(stringValue: key))
            }
        }
    }
}

extension TelemetryEvent {
    /// `vm.created`: a VM was booted or restored and its agent answered.
    public struct VMCreated: Codable, Sendable, Equatable {
        public var vm: String
        public var backend: String
        public var profile: String
        /// From starting the VM to its agent's greeting, in microseconds.
        public var bootUs: UInt64
        /// `boot` for a fresh boot, `restore` for a snapshot restore.
        public var mode: String?
        /// Why the pool made it: a cold start for an invocation, replenishing the idle target.
        public var reason: String?

        public init(vm: String, backend: String, profile: String, bootUs: UInt64, mode: String? = nil, reason: String? = nil) {
            self.vm = vm
            self.backend = backend
            self.profile = profile
            self.bootUs = bootUs
            self.mode = mode
            self.reason = reason
        }

        enum CodingKeys: String, CodingKey {
            case vm, backend, profile
            case bootUs = "boot_us"
            case mode, reason
        }
    }

    /// `vm.destroyed`: a VM was stopped and its files removed.
    public struct VMDestroyed: Codable, Sendable, Equatable {
        public var vm: String
        /// Why, for example `max_uses`, `idle_ttl`, `tainted:timeout`, `shutdown`.
        public var reason: String
        public var lifetimeUs: UInt64
        /// Invocations it ran.
        public var uses: UInt32

        public init(vm: String, reason: String, lifetimeUs: UInt64, uses: UInt32) {
            self.vm = vm
            self.reason = reason
            self.lifetimeUs = lifetimeUs
            self.uses = uses
        }

        enum CodingKeys: String, CodingKey {
            case vm, reason
            case lifetimeUs = "lifetime_us"
            case uses
        }
    }

    /// The resources a VM holds.
    public struct Allocation: Codable, Sendable, Equatable {
        public var vcpus: UInt32?
        public var memoryMB: UInt32?
        /// CPU time the VM may use, in percent of one CPU.
        public var cpuQuotaPercent: UInt32?

        public init(vcpus: UInt32? = nil, memoryMB: UInt32? = nil, cpuQuotaPercent: UInt32? = nil) {
            self.vcpus = vcpus
            self.memoryMB = memoryMB
            self.cpuQuotaPercent = cpuQuotaPercent
        }

        enum CodingKeys: String, CodingKey {
            case vcpus
            case memoryMB = "memory_mb"
            case cpuQuotaPercent = "cpu_quota_pct"
        }
    }

    /// `vm.reallocated`: a VM's resources changed while it ran.
    public struct VMReallocated: Codable, Sendable, Equatable {
        public var vm: String
        public var from: Allocation
        public var to: Allocation
        public var reason: String

        public init(vm: String, from: Allocation, to: Allocation, reason: String) {
            self.vm = vm
            self.from = from
            self.to = to
            self.reason = reason
        }
    }

    /// `pool.resized`: a pool's idle target changed.
    public struct PoolResized: Codable, Sendable, Equatable {
        public var profile: String
        public var from: UInt32
        public var to: UInt32
        public var reason: String

        public init(profile: String, from: UInt32, to: UInt32, reason: String) {
            self.profile = profile
            self.from = from
            self.to = to
            self.reason = reason
        }
    }

    /// `invocation.completed`: an invocation's result was published.
    public struct InvocationCompleted: Codable, Sendable, Equatable {
        public var id: String
        public var method: String
        public var status: InvocationResult.Status
        public var vm: String?
        public var cold: Bool
        public var execUs: UInt64
        public var totalUs: UInt64
        public var predictedUs: UInt64?
        /// The time spent provisioning a VM for it (0 on a warm VM), which the prediction
        /// (`predicted_us`) covers with `exec_us`; absent from workers before the dashboard.
        public var provisionUs: UInt64?
        /// How the VM was chosen: every candidate, scored.
        public var placement: Placement?

        public init(
            id: String, method: String, status: InvocationResult.Status, vm: String?, cold: Bool,
            execUs: UInt64, totalUs: UInt64, predictedUs: UInt64?, provisionUs: UInt64? = nil, placement: Placement? = nil
        ) {
            self.id = id
            self.method = method
            self.status = status
            self.vm = vm
            self.cold = cold
            self.execUs = execUs
            self.totalUs = totalUs
            self.predictedUs = predictedUs
            self.provisionUs = provisionUs
            self.placement = placement
        }

        enum CodingKeys: String, CodingKey {
            case id, method, status, vm, cold
            case execUs = "exec_us"
            case totalUs = "total_us"
            case predictedUs = "predicted_us"
            case provisionUs = "provision_us"
            case placement
        }
    }

    /// A placement decision: the model that predicted, and each candidate with its score.
    public struct Placement: Codable, Sendable, Equatable {
        public struct Candidate: Codable, Sendable, Equatable {
            /// An idle VM's id, or `new` for a VM provisioned for the invocation.
            public var place: String
            /// `warm_method`, `warm`, `fresh` or `cold`.
            public var warmth: String
            public var predictedUs: UInt64
            public var uncertaintyUs: UInt64
            public var suitability: Double
            public var chosen: Bool
            /// What the host's load made the candidate cost (1: nothing; an idle VM is always
            /// 1), which divides its score; absent from workers before the dashboard.
            public var resourceFactor: Double?

            public init(
                place: String, warmth: String, predictedUs: UInt64, uncertaintyUs: UInt64, suitability: Double, chosen: Bool,
                resourceFactor: Double? = nil
            ) {
                self.place = place
                self.warmth = warmth
                self.predictedUs = predictedUs
                self.uncertaintyUs = uncertaintyUs
                self.suitability = suitability
                self.chosen = chosen
                self.resourceFactor = resourceFactor
            }

            enum CodingKeys: String, CodingKey {
                case place, warmth
                case predictedUs = "predicted_us"
                case uncertaintyUs = "uncertainty_us"
                case suitability, chosen
                case resourceFactor = "resource_factor"
            }
        }

        public var model: String
        public var candidates: [Candidate]

        public init(model: String, candidates: [Candidate]) {
            self.model = model
            self.candidates = candidates
        }
    }

    /// `host.sample`: the host monitor's periodic reading.
    public struct HostSample: Codable, Sendable, Equatable {
        /// CPU busy fraction over the last interval, 0…1.
        public var cpuUtil: Double
        public var memAvailableMB: UInt64
        /// Share of the last 10 s in which some task stalled on memory (PSI `some avg10`), 0…1.
        public var memPressure: Double
        public var netRxBps: UInt64
        public var netTxBps: UInt64
        public var vmsIdle: UInt32
        public var vmsBusy: UInt32
        /// The worker's VM backend (`qemu`, `process`); absent from workers before fleets.
        public var backend: String?
        /// Each pool's counts; absent from workers before fleets.
        public var pools: [Pool]?

        /// One profile's pool in a sample.
        public struct Pool: Codable, Sendable, Equatable {
            public var profile: String
            public var idle: UInt32
            /// Lent out, being reset or being provisioned.
            public var busy: UInt32
            /// The idle count the sizer aims at.
            public var target: UInt32
            /// Invocations waiting for a VM of this profile; absent from workers before the
            /// dashboard.
            public var waiting: UInt32?

            public init(profile: String, idle: UInt32, busy: UInt32, target: UInt32, waiting: UInt32? = nil) {
                self.profile = profile
                self.idle = idle
                self.busy = busy
                self.target = target
                self.waiting = waiting
            }
        }

        /// The host's memory; absent from workers before the dashboard.
        public var memTotalMB: UInt64?

        public init(
            cpuUtil: Double, memAvailableMB: UInt64, memPressure: Double, netRxBps: UInt64,
            netTxBps: UInt64, vmsIdle: UInt32, vmsBusy: UInt32, backend: String? = nil, pools: [Pool]? = nil,
            memTotalMB: UInt64? = nil
        ) {
            self.cpuUtil = cpuUtil
            self.memAvailableMB = memAvailableMB
            self.memTotalMB = memTotalMB
            self.memPressure = memPressure
            self.netRxBps = netRxBps
            self.netTxBps = netTxBps
            self.vmsIdle = vmsIdle
            self.vmsBusy = vmsBusy
            self.backend = backend
            self.pools = pools
        }

        enum CodingKeys: String, CodingKey {
            case cpuUtil = "cpu_util"
            case memAvailableMB = "mem_available_mb"
            case memPressure = "mem_pressure"
            case netRxBps = "net_rx_bps"
            case netTxBps = "net_tx_bps"
            case vmsIdle = "vms_idle"
            case vmsBusy = "vms_busy"
            case backend, pools
            case memTotalMB = "mem_total_mb"
        }
    }
}
