import Foundation
import Glibc
import KilnWire
import Logging

/// The `qemu` backend: QEMU's microvm machine. The first VM of each profile boots once to make a
/// ``SnapshotTemplate``; every VM after it is restored from that template (tens of ms instead of
/// a second or more under TCG). A fresh boot is the fallback when no template can be had.
public actor QEMUDriver: MicroVMDriver {
    /// Memory QEMU itself needs beside the guest's RAM (TCG's translation cache, devices).
    public static let qemuOverheadMB = 256

    /// Time limits; each VM that misses one is killed.
    public struct Timeouts: Sendable {
        /// Fresh boot to the agent's hello.
        public var boot: Duration = .seconds(60)
        /// Restore to the agent's hello.
        public var restore: Duration = .seconds(10)
        /// ping and reset.
        public var request: Duration = .seconds(10)
        /// Added to an exec's deadline before the host gives up on the VM.
        public var execGrace: Duration = .seconds(5)
        /// The KVM test boot.
        public var probe: Duration = .seconds(10)
        /// Saving a template after its boot.
        public var save: Duration = .seconds(30)

        public init() {}
    }

    /// Which accelerator to use.
    public enum AcceleratorChoice: Sendable {
        /// KVM when a test boot works, else TCG.
        case auto
        case kvm
        case tcg
    }

    public struct Configuration: Sendable {
        public var qemu = "qemu-system-x86_64"
        public var accelerator = AcceleratorChoice.auto
        /// Provision by snapshot restore (building the template on first use).
        public var snapshots = true
        /// Where templates live; default: `templates/` beside the image folder.
        public var templateRoot: String?
        /// The base of the run directory (per-VM folders, sockets).
        public var runBase = RunDirectory.defaultBase
        /// Put each QEMU into a cgroup with CPU and memory limits (when cgroups are usable).
        public var cgroups = true
        /// QEMU processes kept started and waiting for their incoming state, per template: a
        /// restore then skips QEMU's own start-up (~25 ms of CPU). They use no CPU while they
        /// wait; 0 turns this off.
        public var standbyPerTemplate = 1
        public var timeouts = Timeouts()

        public init() {}
    }

    public nonisolated let image: GuestImage
    public nonisolated let configuration: Configuration
    let logger: Logger
    let run: RunDirectory
    let launcher: QEMULauncher
    private let templates: SnapshotTemplateStore
    private var resolvedAccelerator: (Accelerator, String)?
    private var qemuVersion: String?
    private var live: [String: QEMUMicroVM] = [:]
    var standbys: [String: [QEMULauncher.Started]] = [:]
    var refilling: Set<String> = []
    var closed = false
    private var counter = 0

    /// - Throws: ``VMError`` when the run directory cannot be made or the host CPU clock is unknown.
    public init(image: GuestImage, configuration: Configuration = Configuration(), logger: Logger) throws(VMError) {
        self.image = image
        self.configuration = configuration
        self.logger = logger
        self.run = try RunDirectory(base: configuration.runBase)
        guard let khz = HostFacts.cpuKHz() else {
            throw .hostFailure("no 'cpu MHz' in /proc/cpuinfo: cannot set the guest's tsc_early_khz")
        }
        var layout: CgroupLayout?
        if configuration.cgroups, getuid() == 0, let found = CgroupLayout.current() {
            CgroupCage.sweep(layout: found)
            layout = found
        }
        self.launcher = QEMULauncher(qemu: configuration.qemu, hostKHz: khz, cgroups: layout,
                                     blockDevices: image.rootFilesystems.map(image.path(of:)), logger: logger)
        let templateRoot = configuration.templateRoot
            ?? (image.directory as NSString).deletingLastPathComponent + "/templates"
        self.templates = SnapshotTemplateStore(root: templateRoot)
    }

    public var backend: VMBackend {
        get async { .qemu(await accelerator()) }
    }

    /// The accelerator in use; probed with a test boot the first time under `.auto`.
    public func accelerator() async -> Accelerator {
        if let (accelerator, _) = resolvedAccelerator { return accelerator }
        let result: (Accelerator, String)
        switch configuration.accelerator {
        case .kvm: result = (.kvm, "configured")
        case .tcg: result = (.tcg, "configured")
        case .auto: result = await probeKVM()
        }
        resolvedAccelerator = result
        logger.info("qemu accelerator", metadata: ["accelerator": "\(result.0.rawValue)", "reason": "\(result.1)"])
        return result.0
    }

    /// Why the accelerator was chosen (after ``accelerator()``).
    public var acceleratorReason: String? { resolvedAccelerator?.1 }

    public func provision(_ profile: VMProfile) async throws -> any MicroVM {
        if configuration.snapshots {
            do {
                return try await restore(profile)
            } catch {
                logger.warning("restore failed; booting instead", metadata: ["error": "\(error)"])
            }
        }
        return try await boot(profile)
    }

    /// Boots a fresh VM from the kernel.
    public func boot(_ profile: VMProfile) async throws(VMError) -> QEMUMicroVM {
        let accelerator = await accelerator()
        let id = nextID()
        let started = ContinuousClock.now
        let directory = try run.makeVMDirectory(id: id)
        let (launched, _) = try await launcher.launch(
            id: id, profile: profile, accelerator: accelerator, start: .boot(image: image, sharedMemoryFile: nil),
            directory: directory, timeout: configuration.timeouts.boot)
        return adopt(id: id, profile: profile, accelerator: accelerator, launched: launched,
                     provisioning: Provisioning(method: .boot, duration: started.duration(to: .now)))
    }

    /// Restores a VM from the profile's snapshot template, building the template first if needed.
    /// A standby QEMU (already started, waiting for its state) is used when one is ready.
    public func restore(_ profile: VMProfile) async throws(VMError) -> QEMUMicroVM {
        if closed { throw .hostFailure("the QEMU driver is shut down") }
        let template = try await template(for: profile)
        let accelerator = await accelerator()
        let started = ContinuousClock.now
        let deadline = started + configuration.timeouts.restore
        let start = QEMULauncher.Start.restore(template)
        var waiting = await takeStandby(template.key)
        let fromStandby = waiting != nil
        if waiting == nil {
            let id = nextID()
            waiting = try await launcher.start(
                id: id, profile: profile, accelerator: accelerator, start: start,
                directory: try run.makeVMDirectory(id: id), deadline: deadline, timeout: configuration.timeouts.restore)
        }
        refillStandby(template: template, profile: profile, accelerator: accelerator)
        let (launched, _) = try await launcher.finish(waiting!, start: start, deadline: deadline,
                                                      timeout: configuration.timeouts.restore)
        return adopt(id: waiting!.id, profile: profile, accelerator: accelerator, launched: launched,
                     provisioning: Provisioning(method: .restore, duration: started.duration(to: .now), fromStandby: fromStandby))
    }

    /// The snapshot template for `profile`, booting and saving it when there is none yet.
    public func template(for profile: VMProfile) async throws(VMError) -> SnapshotTemplate {
        let accelerator = await accelerator()
        let version = try await qemuVersionString()
        let key = SnapshotTemplate.key(image: image, profile: profile, accelerator: accelerator, qemuVersion: version)
        do {
            return try await templates.template(key: key) { staging in
                try await self.saveTemplate(profile: profile, accelerator: accelerator, into: staging)
            }
        } catch let error as VMError {
            throw error
        } catch {
            throw .hostFailure("snapshot template \(key): \(error)")
        }
    }

    /// Destroys every VM and standby QEMU this driver started. The driver refuses new VMs after.
    public func shutdown() async {
        closed = true
        let vms = Array(live.values)
        for vm in vms { await vm.destroy() }
        live.removeAll()
        let waiting = standbys.values.flatMap { $0 }
        standbys.removeAll()
        for started in waiting { await launcher.abandon(started) }
    }

    /// Standby QEMUs ready now (all templates).
    public var standbyCount: Int { standbys.values.reduce(0) { $0 + $1.count } }

    /// The number of VMs alive.
    public var liveCount: Int { live.count }

    private func adopt(id: String, profile: VMProfile, accelerator: Accelerator, launched: QEMULaunch,
                       provisioning: Provisioning) -> QEMUMicroVM {
        let vm = QEMUMicroVM(id: id, backend: .qemu(accelerator), profile: profile, provisioning: provisioning,
                             launched: launched, timeouts: configuration.timeouts, logger: logger) { [weak self] id in
            await self?.forget(id)
        }
        live[id] = vm
        ExitCleanup.shared.removeAtExit(path: launched.directory)
        logger.debug("vm ready", metadata: ["vm": "\(id)", "how": "\(provisioning.method.rawValue)",
                                            "ms": "\(provisioning.duration.milliseconds)"])
        return vm
    }

    private func forget(_ id: String) { live[id] = nil }

    func nextID() -> String {
        counter += 1
        return "q\(counter)-\(String(UInt16.random(in: 0...UInt16.max), radix: 16))"
    }

    private func qemuVersionString() async throws(VMError) -> String {
        if let qemuVersion { return qemuVersion }
        let scratch = run.path
        let output = try await HostCommand(configuration.qemu, ["--version"], timeout: .seconds(20)).run(scratch: scratch)
        let version = output.stdoutText.split(separator: "\n").first.map(String.init) ?? "unknown"
        qemuVersion = version
        return version
    }

}

extension Duration {
    /// Whole milliseconds (held to ±Int64's range rather than overflowing).
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        let (sum, carried) = whole.addingReportingOverflow(attoseconds / 1_000_000_000_000_000)
        return carried ? (seconds < 0 ? .min : .max) : sum
    }

    /// Microseconds, as a Double.
    public var microseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1e6 + Double(attoseconds) / 1e12
    }
}
