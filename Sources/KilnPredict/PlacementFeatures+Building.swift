import KilnWire

/// The numbers a latency model may take from an invocation's `args`: what usually sets a
/// method's work (`ms`, a width, the size of the data). A producer can send anything, so only
/// sane values pass: finite numbers of at most ``maximumMagnitude``, under plain keys of at most
/// 64 bytes; strings, binaries, arrays and maps count by their length, as `key.len`.
public enum ArgumentFeatures {
    /// Numbers kept at most, by key order.
    public static let maximumKeys = 8
    /// Larger numbers (2^63, 1e300) are ids or mistakes, not a measure of work: dropped.
    public static let maximumMagnitude = 1e15

    /// The features of `args` (a map; anything else has none).
    public static func extract(_ args: MessagePackValue) -> [String: Double] {
        guard case .map(let entries) = args else { return [:] }
        // The smallest keys, kept sorted as they come: a map of a million entries costs one pass.
        var kept: [(key: String, value: Double)] = []
        for entry in entries {
            guard let key = entry.key.stringValue, Invocation.isPlainName(key, maxBytes: 64) else { continue }
            let name: String
            let value: Double
            switch entry.value {
            case .int(let number): (name, value) = (key, Double(number))
            case .uint(let number): (name, value) = (key, Double(number))
            case .float(let number): (name, value) = (key, Double(number))
            case .double(let number): (name, value) = (key, number)
            case .string(let text): (name, value) = (key + ".len", Double(text.utf8.count))
            case .binary(let bytes): (name, value) = (key + ".len", Double(bytes.count))
            case .array(let elements): (name, value) = (key + ".len", Double(elements.count))
            case .map(let elements): (name, value) = (key + ".len", Double(elements.count))
            default: continue
            }
            guard value.isFinite, abs(value) <= maximumMagnitude else { continue }
            if let existing = kept.firstIndex(where: { $0.key == name }) {
                kept[existing].value = value
                continue
            }
            if kept.count == maximumKeys {
                guard name < kept[maximumKeys - 1].key else { continue }
                kept.removeLast()
            }
            let position = kept.firstIndex { $0.key > name } ?? kept.count
            kept.insert((name, value), at: position)
        }
        return Dictionary(uniqueKeysWithValues: kept.map { ($0.key, $0.value) })
    }
}

/// What a method needs beyond its code, as its manifest declares it: named parts (its runtime
/// or root filesystem, the data files it reads) and their size. A VM that has not loaded them
/// yet runs the method slower.
public struct MethodDependencies: Sendable, Hashable {
    /// Names of the parts, such as `runtime:python3` or `file:/data/model.bin`. A VM that ran a
    /// method needing a part has it loaded.
    public var names: Set<String>
    /// Their size, MiB (a hint: what loading them costs grows with it).
    public var sizeMB: Double

    public init(names: Set<String>, sizeMB: Double) {
        self.names = names
        self.sizeMB = sizeMB.isFinite ? max(0, sizeMB) : 0
    }

    /// Nothing beyond the code.
    public static let none = MethodDependencies(names: [], sizeMB: 0)
}

/// What the model needs to know of the invocation being placed: built once per invocation.
public struct InvocationTraits: Sendable, Hashable {
    public var method: String
    /// Size of the invocation as received, bytes.
    public var argsBytes: Int
    /// See ``ArgumentFeatures``.
    public var numericArgs: [String: Double]
    /// The deadline it runs under.
    public var deadlineMs: UInt64
    public var dependencies: MethodDependencies

    /// - Parameters:
    ///   - method: The method's name.
    ///   - args: The invocation's `args`; its numbers are extracted here.
    ///   - argsBytes: The size of the invocation as received.
    ///   - deadlineMs: The deadline it runs under.
    ///   - dependencies: What the method's manifest entry declares. A size without names is
    ///     taken as the method's own: loaded on a VM once it ran the method.
    public init(method: String, args: MessagePackValue, argsBytes: Int, deadlineMs: UInt64, dependencies: MethodDependencies = .none) {
        self.method = method
        self.argsBytes = max(0, argsBytes)
        self.numericArgs = ArgumentFeatures.extract(args)
        self.deadlineMs = deadlineMs
        var dependencies = dependencies
        if dependencies.names.isEmpty && dependencies.sizeMB > 0 { dependencies.names = ["method:\(method)"] }
        self.dependencies = dependencies
    }
}

/// A VM an invocation could run on, as the pool describes it.
public struct CandidateVM: Sendable, Hashable {
    /// What an existing VM has done since it was provisioned.
    public struct Past: Sendable, Hashable {
        /// The method it ran last.
        public var lastMethod: String?
        /// Invocations it ran.
        public var uses: Int
        /// The dependency names of the methods it ran.
        public var loadedDependencies: Set<String>

        public init(lastMethod: String?, uses: Int, loadedDependencies: Set<String>) {
            self.lastMethod = lastMethod
            self.uses = uses
            self.loadedDependencies = loadedDependencies
        }
    }

    public var profile: String
    public var vcpus: Int
    public var memoryMB: Int
    public var backend: String
    /// `nil`: the VM does not exist yet; it would be provisioned for the invocation.
    public var past: Past?

    public init(profile: String, vcpus: Int, memoryMB: Int, backend: String, past: Past?) {
        self.profile = profile
        self.vcpus = vcpus
        self.memoryMB = memoryMB
        self.backend = backend
        self.past = past
    }
}

/// The host and the pool at the moment of placement.
public struct HostLoad: Sendable, Hashable {
    /// CPU busy fraction, 0…1.
    public var cpu: Double
    /// PSI memory pressure, 0…1.
    public var memoryPressure: Double
    /// PSI CPU pressure (the share of time a runnable task waited), 0…1.
    public var cpuPressure: Double
    /// Bytes per second in and out on the host's interfaces.
    public var networkBps: Double
    /// Invocations running on VMs of this worker.
    public var concurrentExecutions: Int
    /// Invocations of the profile waiting for a VM.
    public var queueDepth: Int
    /// Idle VMs of the profile.
    public var idleVMs: Int
    /// VMs of the profile being provisioned.
    public var provisionsInFlight: Int

    public init(
        cpu: Double, memoryPressure: Double, cpuPressure: Double = 0, networkBps: Double, concurrentExecutions: Int, queueDepth: Int = 0,
        idleVMs: Int = 0, provisionsInFlight: Int = 0
    ) {
        self.cpu = cpu.isFinite ? min(max(cpu, 0), 1) : 0
        self.memoryPressure = memoryPressure.isFinite ? min(max(memoryPressure, 0), 1) : 0
        self.cpuPressure = cpuPressure.isFinite ? min(max(cpuPressure, 0), 1) : 0
        self.networkBps = networkBps.isFinite ? max(networkBps, 0) : 0
        self.concurrentExecutions = max(0, concurrentExecutions)
        self.queueDepth = max(0, queueDepth)
        self.idleVMs = max(0, idleVMs)
        self.provisionsInFlight = max(0, provisionsInFlight)
    }
}

extension PlacementFeatures {
    /// The features of running `invocation` on `vm` under `load`: the VM's warmth for the
    /// method and the share of the method's dependencies it has not loaded come from what it ran.
    public init(invocation: InvocationTraits, vm: CandidateVM, load: HostLoad) {
        let warmth: VMWarmth
        var unloaded = invocation.dependencies.sizeMB
        if let past = vm.past {
            warmth = past.lastMethod == invocation.method ? .warmForMethod : (past.uses == 0 ? .fresh : .warm)
            let names = invocation.dependencies.names
            if !names.isEmpty {
                unloaded *= Double(names.subtracting(past.loadedDependencies).count) / Double(names.count)
            }
        } else {
            warmth = .notProvisioned
        }
        self.init(
            method: invocation.method, argsBytes: invocation.argsBytes, numericArgs: invocation.numericArgs, profile: vm.profile,
            vcpus: vm.vcpus, memoryMB: vm.memoryMB, backend: vm.backend, warmth: warmth, reuseCount: vm.past?.uses ?? 0,
            hostCPU: load.cpu, memoryPressure: load.memoryPressure, cpuPressure: load.cpuPressure, networkBps: load.networkBps,
            concurrentExecutions: load.concurrentExecutions, queueDepth: load.queueDepth, idleVMs: load.idleVMs,
            provisionsInFlight: load.provisionsInFlight, dependencyMB: invocation.dependencies.sizeMB,
            unloadedDependencyMB: unloaded, deadlineMs: invocation.deadlineMs)
    }
}
