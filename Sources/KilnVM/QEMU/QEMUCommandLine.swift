/// The QEMU command line of a microvm guest, as a value: built here, checked by unit tests,
/// started by ``QEMUMicroVM``. Descriptors are inherited: the agent's listening socket and the
/// QMP socket are passed as fds (no socket files to race on), and so is the snapshot state for
/// a restore.
public struct QEMUCommandLine: Sendable, Equatable {
    /// How the guest starts.
    public enum Start: Sendable, Equatable {
        /// Boot the kernel with the initramfs. `sharedMemoryFile` set: guest RAM lives in that
        /// file, mapped shared (a snapshot template's source).
        case boot(kernel: String, initrd: String, append: String, sharedMemoryFile: String?)
        /// Restore: RAM is a private copy-on-write mapping of the template's memory file, the
        /// device state arrives by `migrate-incoming` (so QEMU waits: `-incoming defer`).
        case restore(memoryFile: String)
    }

    public var qemu: String
    public var accelerator: Accelerator
    public var vcpus: Int
    /// The guest's RAM (a profile's ceiling when it has one).
    public var memoryMB: Int
    /// A virtio balloon, through which QMP `balloon` sets how much of the RAM the guest may use.
    public var balloon: Bool
    public var start: Start
    /// Where the guest's serial console is written.
    public var consoleLog: String
    /// The inherited descriptor number of the agent channel's listening socket.
    public var agentSocketFD: Int32
    /// The inherited descriptor number of the QMP socket (connected).
    public var qmpSocketFD: Int32
    /// Read-only raw block images, as virtio-blk devices in this order (the guest's `/dev/vda`,
    /// `/dev/vdb`, …): the image's root file systems. A restore names the same ones as the
    /// template it comes from.
    public var blockDevices: [String]

    public init(qemu: String = "qemu-system-x86_64", accelerator: Accelerator, vcpus: Int, memoryMB: Int, balloon: Bool = false,
                start: Start, consoleLog: String, agentSocketFD: Int32, qmpSocketFD: Int32, blockDevices: [String] = []) {
        self.qemu = qemu
        self.accelerator = accelerator
        self.vcpus = vcpus
        self.memoryMB = memoryMB
        self.balloon = balloon
        self.start = start
        self.consoleLog = consoleLog
        self.agentSocketFD = agentSocketFD
        self.qmpSocketFD = qmpSocketFD
        self.blockDevices = blockDevices
    }

    /// The kernel command line: quiet serial console, the TSC frequency given (calibration hangs
    /// on a busy host without it), no mitigations, self-tests or audit, and a trusted CPU RNG;
    /// and for the agent, the profile's memory (`kiln.memory_mb`: the kernel reports less than
    /// the VM has, and the agent starts warm only the methods a VM is sized for) and how long its
    /// warm runtimes may take to get ready before it greets (`kiln.warm_wait_ms`).
    public static func kernelArguments(hostKHz: Int, memoryMB: Int, warmWait: Duration) -> String {
        ["kiln.memory_mb=\(memoryMB)", "kiln.warm_wait_ms=\(warmWait.milliseconds)",
            "console=ttyS0", "quiet", "tsc_early_khz=\(hostKHz)", "mitigations=off", "cryptomgr.notests",
            "audit=0", "apparmor=0", "security=none", "init_on_alloc=0", "no_timer_check", "tsc=reliable",
            "i8042.noaux", "i8042.nopnp", "random.trust_cpu=on", "nokaslr", "panic=-1",
        ].joined(separator: " ")
    }

    /// argv, including argv[0].
    public var arguments: [String] {
        var machine = "microvm"
        var memory: [String] = []
        switch start {
        case .boot(_, _, _, let shared?):
            machine += ",memory-backend=mem"
            memory = ["-object", "memory-backend-file,id=mem,size=\(memoryMB)M,mem-path=\(shared),share=on"]
        case .restore(let file):
            machine += ",memory-backend=mem"
            memory = ["-object", "memory-backend-file,id=mem,size=\(memoryMB)M,mem-path=\(file),share=off"]
        case .boot(_, _, _, nil):
            break
        }
        var arguments = [qemu, "-M", machine]
        switch accelerator {
        case .kvm: arguments += ["-accel", "kvm", "-cpu", "host"]
        case .tcg: arguments += ["-accel", "tcg", "-cpu", "max"]
        }
        arguments += ["-m", "\(memoryMB)M", "-smp", "\(vcpus)"] + memory
        arguments += ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
        // Without the global state in the stream a restored clone runs at once instead of staying paused.
        arguments += ["-global", "migration.store-global-state=off"]
        if case .boot(let kernel, let initrd, let append, _) = start {
            arguments += ["-kernel", kernel, "-initrd", initrd, "-append", append]
        }
        arguments += ["-serial", "file:\(consoleLog)"]
        arguments += ["-device", "virtio-serial-device"]
        arguments += ["-chardev", "socket,id=agent,fd=\(agentSocketFD),server=on,wait=off"]
        arguments += ["-device", "virtserialport,chardev=agent,name=\(GuestLayout.agentPortName)"]
        arguments += ["-chardev", "socket,id=qmp,fd=\(qmpSocketFD)", "-mon", "chardev=qmp,mode=control"]
        if balloon { arguments += ["-device", "virtio-balloon-device"] }
        for (index, file) in blockDevices.enumerated() {
            // Read-only: clones share the file, and the host's page cache serves them all.
            arguments += ["-drive", "file=\(file),format=raw,if=none,readonly=on,id=rootfs\(index)",
                          "-device", "virtio-blk-device,drive=rootfs\(index)"]
        }
        if case .restore = start { arguments += ["-incoming", "defer"] }
        return arguments
    }
}
