import KilnWire

/// One isolated guest that runs method programs through its agent. Drivers (``QEMUDriver``,
/// ``ProcessSandboxDriver``) make them; the pool owns them. Requests to one VM are served one at
/// a time, in order; every request has a timeout, and a VM whose process ends fails the request
/// in flight with ``VMError/vmDied(vm:during:detail:)`` rather than hanging.
public protocol MicroVM: AnyObject, Sendable {
    /// Unique on this host, short (it appears in paths).
    var id: String { get }
    /// The driver that made it.
    var backend: VMBackend { get }
    /// The profile it was provisioned with.
    var profile: VMProfile { get }
    /// How it came to be and how long that took.
    var provisioning: Provisioning { get }
    /// The agent's latest greeting (version, vCPUs and memory as the guest sees them).
    var hello: GuestFrame.Hello? { get async }

    /// Runs a method program inside the VM.
    /// - Parameter request: the entry, payload and deadline; the agent kills the program's
    ///   process group at the deadline and answers `timeout`.
    /// - Returns: the agent's result (status, stdout, exit code, stderr tail, time, peak RSS).
    /// - Throws: ``VMError`` when the VM does not answer within the deadline plus a grace period
    ///   (it is killed then), dies, or answers nonsense.
    func exec(_ request: GuestFrame.ExecRequest) async throws -> GuestFrame.ExecResult

    /// Runs several calls in one request to the agent, one after another (see
    /// ``GuestFrame/ExecBatch``). `each` gets every call's outcome in order, as it ends; after a
    /// failure (which ``exec(_:)`` would throw) the calls that follow get none, for they did not run.
    func execBatch(
        _ requests: [GuestFrame.ExecRequest], each: @Sendable (Int, Result<GuestFrame.ExecResult, any Error>) async -> Void
    ) async

    /// Kills what the last method left running and wipes the scratch space, for reuse.
    /// - Parameter keepingServeRuntime: keep the serve-mode runtime of the method that ran last
    ///   (and what it started), so that its next call skips the start-up; the agent kills it
    ///   before a call of any other method runs. False clears everything.
    func reset(keepingServeRuntime: Bool) async throws

    /// A round trip to the agent: guest uptime, load, available memory.
    func ping() async throws -> GuestFrame.Pong

    /// Host-side figures: the VM process's resident and proportional memory, CPU time.
    func stats() async throws -> VMStats

    /// The CPU time the VM has used on the host so far, user + system, microseconds: its cgroup's
    /// where the host accounts one (every process of the VM), else its main process's. One file
    /// read, no trip to the guest: read before and after a call, the difference is what the call
    /// cost the host. Nil once the VM is gone.
    func hostCPUTimeUs() -> UInt64?

    /// Changes the CPU and memory limits the VM runs under on the host.
    /// - Parameter limits: the new limits; drivers refuse what they cannot apply live.
    func resize(_ limits: ResourceLimits) async throws

    /// Kills the VM and removes everything it had on the host (process, sockets, files,
    /// cgroup). Idempotent; never throws.
    func destroy() async
}

extension MicroVM {
    /// One ``exec(_:)`` after another: for VMs whose agent takes no batch.
    public func execOneByOne(
        _ requests: [GuestFrame.ExecRequest], each: @Sendable (Int, Result<GuestFrame.ExecResult, any Error>) async -> Void
    ) async {
        await execOneAfterAnother(requests, exec: exec, each: each)
    }

    /// Kills everything the last method left running, serve-mode runtimes included, and wipes the
    /// scratch space.
    public func reset() async throws {
        try await reset(keepingServeRuntime: false)
    }
}

/// Makes micro-VMs of one backend.
public protocol MicroVMDriver: Sendable {
    /// The backend, with the accelerator it uses.
    var backend: VMBackend { get async }

    /// Provisions a VM: by snapshot restore where the driver has a template, else by boot.
    /// - Parameter profile: vCPUs and memory.
    /// - Throws: ``VMError`` when the VM is not ready within the driver's timeout (it is killed).
    func provision(_ profile: VMProfile) async throws -> any MicroVM

    /// Destroys every VM this driver made that is still alive, and removes its working files.
    func shutdown() async
}

/// The size of a VM.
public struct VMProfile: Sendable, Hashable, CustomStringConvertible {
    /// A name for logs and paths, e.g. `small`.
    public var name: String
    public var vcpus: Int
    /// The memory a VM starts with.
    public var memoryMB: Int
    /// The most memory a VM can be given while it runs, when above `memoryMB`: QEMU reserves it
    /// at boot and a virtio balloon holds the difference until ``MicroVM/resize(_:)`` lets it
    /// go. Nil: the memory is fixed at `memoryMB`.
    public var memoryCeilingMB: Int?

    public init(name: String, vcpus: Int = 1, memoryMB: Int = 128, memoryCeilingMB: Int? = nil) {
        self.name = name
        self.vcpus = vcpus
        self.memoryMB = memoryMB
        self.memoryCeilingMB = memoryCeilingMB.flatMap { $0 > memoryMB ? $0 : nil }
    }

    /// The RAM a QEMU guest boots with: the ceiling when there is one.
    public var bootMemoryMB: Int { memoryCeilingMB ?? memoryMB }

    /// 1 vCPU, 128 MiB.
    public static let small = VMProfile(name: "small", vcpus: 1, memoryMB: 128)
    /// 1 vCPU, 256 MiB: room for a runtime such as Python with its libraries.
    public static let medium = VMProfile(name: "medium", vcpus: 1, memoryMB: 256)

    public var description: String {
        "\(name) (\(vcpus) vCPU, \(memoryMB) MiB\(memoryCeilingMB.map { ", up to \($0) MiB" } ?? ""))"
    }
}

/// Which driver runs a VM, and how isolated it is.
public enum VMBackend: Sendable, Hashable, CustomStringConvertible {
    /// QEMU microvm with a hardware accelerator (KVM) or the TCG emulator.
    case qemu(Accelerator)
    /// kiln-agent in fresh Linux namespaces with cgroup limits.
    case process

    /// The backend's name on the wire (`vm.backend`).
    public var name: String {
        switch self {
        case .qemu: return "qemu"
        case .process: return "process"
        }
    }

    /// What separates a method from the host.
    public var isolation: String {
        switch self {
        case .qemu(.kvm): return "hardware virtualization (KVM)"
        case .qemu(.tcg): return "full emulation (QEMU TCG)"
        case .process: return "namespaces and cgroups only: no hardware isolation"
        }
    }

    public var description: String {
        switch self {
        case .qemu(let accelerator): return "qemu/\(accelerator.rawValue)"
        case .process: return "process (no hardware isolation)"
        }
    }
}

/// QEMU's accelerator.
public enum Accelerator: String, Sendable, Hashable {
    case kvm
    case tcg
}

/// How a VM was provisioned.
public struct Provisioning: Sendable, Equatable {
    public enum Method: String, Sendable {
        /// Restored from a snapshot template.
        case restore
        /// Booted from the kernel.
        case boot
        /// Started as a process (the `process` backend).
        case spawn
    }

    public var method: Method
    /// From the request to the agent's hello.
    public var duration: Duration
    /// A restore into a QEMU that was started beforehand and waited (its start-up is not in
    /// `duration`).
    public var fromStandby: Bool

    public init(method: Method, duration: Duration, fromStandby: Bool = false) {
        self.method = method
        self.duration = duration
        self.fromStandby = fromStandby
    }
}

/// Host-side figures for one VM.
public struct VMStats: Sendable, Equatable {
    /// The VM's main process (QEMU, or the sandbox's agent).
    public var pid: Int32
    /// Resident set size, KiB (shared pages counted in full).
    public var rssKB: UInt64
    /// Proportional set size, KiB (shared pages divided among their users).
    public var pssKB: UInt64
    /// User + system CPU time the process used, microseconds.
    public var cpuTimeUs: UInt64

    public init(pid: Int32, rssKB: UInt64, pssKB: UInt64, cpuTimeUs: UInt64) {
        self.pid = pid
        self.rssKB = rssKB
        self.pssKB = pssKB
        self.cpuTimeUs = cpuTimeUs
    }
}

/// Host-side limits a VM runs under.
public struct ResourceLimits: Sendable, Equatable {
    /// CPU bandwidth in units of one core (1.5 = one and a half cores).
    public var cpus: Double
    /// Memory limit in MiB.
    public var memoryMB: Int

    public init(cpus: Double, memoryMB: Int) {
        self.cpus = cpus
        self.memoryMB = memoryMB
    }
}

/// Runs `requests` one after another with `exec`, handing `each` every outcome in order; after a
/// failure the rest get none, as after a failure in a batch.
func execOneAfterAnother(
    _ requests: [GuestFrame.ExecRequest], exec: (GuestFrame.ExecRequest) async throws -> GuestFrame.ExecResult,
    each: @Sendable (Int, Result<GuestFrame.ExecResult, any Error>) async -> Void
) async {
    for (index, request) in requests.enumerated() {
        do {
            await each(index, .success(try await exec(request)))
        } catch {
            await each(index, .failure(error))
            return
        }
    }
}
