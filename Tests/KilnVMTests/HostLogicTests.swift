import Testing

@testable import KilnVM

@Suite("QEMU command line")
struct QEMUCommandLineTests {
    private func line(_ start: QEMUCommandLine.Start, accelerator: Accelerator = .tcg) -> [String] {
        QEMUCommandLine(accelerator: accelerator, vcpus: 2, memoryMB: 256, start: start,
                        consoleLog: "/run/vm/console.log", agentSocketFD: 3, qmpSocketFD: 4).arguments
    }

    /// The value following `option` (the first time it appears).
    private func value(_ arguments: [String], after option: String) -> String? {
        guard let index = arguments.firstIndex(of: option), index + 1 < arguments.count else { return nil }
        return arguments[index + 1]
    }

    @Test func bootsTheKernelDirectly() {
        let arguments = line(.boot(kernel: "/img/vmlinux", initrd: "/img/initrd.cpio", append: "console=ttyS0", sharedMemoryFile: nil))
        #expect(arguments.first == "qemu-system-x86_64")
        #expect(value(arguments, after: "-M") == "microvm")
        #expect(value(arguments, after: "-accel") == "tcg")
        #expect(value(arguments, after: "-cpu") == "max")
        #expect(value(arguments, after: "-smp") == "2")
        #expect(value(arguments, after: "-m") == "256M")
        #expect(value(arguments, after: "-kernel") == "/img/vmlinux")
        #expect(value(arguments, after: "-initrd") == "/img/initrd.cpio")
        #expect(value(arguments, after: "-append") == "console=ttyS0")
        #expect(value(arguments, after: "-serial") == "file:/run/vm/console.log")
        #expect(arguments.contains("-no-reboot") && arguments.contains("-nodefaults"))
        #expect(arguments.contains("socket,id=agent,fd=3,server=on,wait=off"))
        #expect(arguments.contains("virtserialport,chardev=agent,name=agent"))
        #expect(arguments.contains("socket,id=qmp,fd=4"))
        #expect(!arguments.contains("-incoming"))
        #expect(!arguments.contains(where: { $0.contains("memory-backend") }))
        // No NIC: -nodefaults and no -netdev/-nic.
        #expect(!arguments.contains(where: { $0.hasPrefix("-net") || $0 == "-nic" }))
    }

    @Test func templateSourceSharesItsMemoryFile() {
        let arguments = line(.boot(kernel: "k", initrd: "i", append: "a", sharedMemoryFile: "/t/ram.img"))
        #expect(value(arguments, after: "-M") == "microvm,memory-backend=mem")
        #expect(value(arguments, after: "-object") == "memory-backend-file,id=mem,size=256M,mem-path=/t/ram.img,share=on")
        #expect(value(arguments, after: "-global") == "migration.store-global-state=off")
    }

    @Test func restoreMapsTheTemplatePrivatelyAndWaits() {
        let arguments = line(.restore(memoryFile: "/t/ram.img"))
        #expect(value(arguments, after: "-object") == "memory-backend-file,id=mem,size=256M,mem-path=/t/ram.img,share=off")
        #expect(value(arguments, after: "-incoming") == "defer")
        #expect(!arguments.contains("-kernel"))
    }

    @Test func kvmUsesTheHostCPU() {
        let arguments = line(.boot(kernel: "k", initrd: "i", append: "a", sharedMemoryFile: nil), accelerator: .kvm)
        #expect(value(arguments, after: "-accel") == "kvm")
        #expect(value(arguments, after: "-cpu") == "host")
    }

    @Test func templateKeysFollowTheMachine() throws {
        let metadata = GuestImage.Metadata(id: String(repeating: "c", count: 64), kernelPackage: "k", kernelVersion: "1",
                                           initrd: "initrd.cpio", initrdBytes: 1, agentVersion: nil,
                                           manifest: MethodManifest(programs: [:], methods: ["a": .init(entry: ["/x"])]))
        let image = GuestImage(id: metadata.id, directory: "/img", metadata: metadata)
        let small = SnapshotTemplate.key(image: image, profile: .small, accelerator: .tcg, qemuVersion: "QEMU 7.2.22")
        #expect(small.hasPrefix("cccccccccccccccc-1c128m-tcg-"))
        #expect(small == SnapshotTemplate.key(image: image, profile: .small, accelerator: .tcg, qemuVersion: "QEMU 7.2.22"))
        #expect(small != SnapshotTemplate.key(image: image, profile: .small, accelerator: .tcg, qemuVersion: "QEMU 8.0.0"))
        #expect(small != SnapshotTemplate.key(image: image, profile: .small, accelerator: .kvm, qemuVersion: "QEMU 7.2.22"))
        let big = VMProfile(name: "big", vcpus: 2, memoryMB: 256)
        #expect(SnapshotTemplate.key(image: image, profile: big, accelerator: .tcg, qemuVersion: "QEMU 7.2.22").contains("-2c256m-"))
    }

    @Test func kernelArgumentsCarryTheTSCFrequencyTheProfilesMemoryAndTheWarmWait() {
        let append = QEMUCommandLine.kernelArguments(hostKHz: 2_596_150, memoryMB: 256, warmWait: .seconds(45))
        #expect(append.contains("tsc_early_khz=2596150"))
        #expect(append.split(separator: " ").contains("kiln.memory_mb=256"))
        #expect(append.split(separator: " ").contains("kiln.warm_wait_ms=45000"))
        // Three quarters of the boot timeout, never more than 90 s.
        #expect(QEMULauncher.warmWait(bootTimeout: .seconds(60)) == .seconds(45))
        #expect(QEMULauncher.warmWait(bootTimeout: .seconds(300)) == .seconds(90))
        #expect(append.contains("console=ttyS0"))
        #expect(!append.contains("acpi=off"))
        #expect(!append.contains("rtc=off"))
    }
}

@Suite("Host facts")
struct HostFactsTests {
    @Test func readsTheCPUClock() {
        #expect(HostFacts.cpuKHz(cpuinfo: "processor\t: 0\ncpu MHz\t\t: 2596.150\n") == 2_596_150)
        #expect(HostFacts.cpuKHz(cpuinfo: "processor\t: 0\n") == nil)
    }

    @Test func readsSmapsRollup() throws {
        let text = """
            55d4c0000000-7ffd00000000 ---p 00000000 00:00 0                          [rollup]
            Rss:               64132 kB
            Pss:               20233 kB
            Pss_Anon:          10000 kB
            """
        let figures = try #require(ProcessFigures.parseSmapsRollup(text))
        #expect(figures.rssKB == 64132)
        #expect(figures.pssKB == 20233)
        #expect(ProcessFigures.parseSmapsRollup("Rss: 1 kB\n") == nil)
    }

    @Test func parsesLdd() {
        let output = """
            \tlinux-vdso.so.1 (0x00007ffd)
            \tlibmsgpackc.so.2 => /lib/x86_64-linux-gnu/libmsgpackc.so.2 (0x00007f)
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)
            """
        #expect(SharedLibraries.parse(lddOutput: output) == [
            "/lib/x86_64-linux-gnu/libmsgpackc.so.2", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2",
        ])
        #expect(SharedLibraries.parse(lddOutput: "\tnot a dynamic executable\n").isEmpty)
    }
}

@Suite("cgroup layout")
struct CgroupLayoutTests {
    static let v1Mounts = """
        tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
        cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
        cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
        cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
        cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
        """

    @Test func prefersV1ControllersOnAHybridHost() {
        let layout = CgroupLayout.detect(mounts: Self.v1Mounts) { _ in "" }
        #expect(layout == .v1(cpu: "/sys/fs/cgroup/cpu", memory: "/sys/fs/cgroup/memory", pids: "/sys/fs/cgroup/pids", cpuacct: "/sys/fs/cgroup/cpuacct"))
        #expect(layout?.hierarchies == ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpuacct"])
    }

    @Test func readsCoMountedV1Controllers() {
        let mounts = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        #expect(CgroupLayout.detect(mounts: mounts) { _ in nil }
            == .v1(cpu: "/sys/fs/cgroup/cpu,cpuacct", memory: "/sys/fs/cgroup/memory", pids: nil, cpuacct: "/sys/fs/cgroup/cpu,cpuacct"))
        #expect(CgroupLayout.detect(mounts: mounts) { _ in nil }?.hierarchies == ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory"])
    }

    @Test func usesV2WhenItOffersCPUAndMemory() {
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"
        #expect(CgroupLayout.detect(mounts: mounts) { _ in "cpuset cpu io memory pids\n" } == .v2(root: "/sys/fs/cgroup"))
        #expect(CgroupLayout.detect(mounts: mounts) { _ in "io pids\n" } == nil)
        #expect(CgroupLayout.detect(mounts: "proc /proc proc rw 0 0\n") { _ in nil } == nil)
    }
}

@Suite("Image content hash")
struct InitramfsPlanTests {
    @Test func fingerprintFollowsContentAndLayout() {
        var plan = InitramfsPlan()
        plan.add("/kiln/agent", .hostFile("/build/kiln-agent", mode: 0o755, strip: true))
        plan.add("/bin/sh", .symlink("busybox"))
        plan.add("/init", .text("#!/bin/sh\n", mode: 0o755))
        #expect(plan.sortedPaths == ["/bin", "/bin/sh", "/init", "/kiln", "/kiln/agent"])
        #expect(plan.hostFiles == ["/build/kiln-agent"])
        let base = plan.fingerprint(fileHashes: ["/build/kiln-agent": "aaaa"], extra: ["v1"])
        #expect(base == plan.fingerprint(fileHashes: ["/build/kiln-agent": "aaaa"], extra: ["v1"]))
        #expect(base != plan.fingerprint(fileHashes: ["/build/kiln-agent": "bbbb"], extra: ["v1"]))
        #expect(base != plan.fingerprint(fileHashes: ["/build/kiln-agent": "aaaa"], extra: ["v2"]))
        var changed = plan
        changed.add("/init", .text("#!/bin/sh\necho\n", mode: 0o755))
        #expect(base != changed.fingerprint(fileHashes: ["/build/kiln-agent": "aaaa"], extra: ["v1"]))
    }

    @Test func initScriptLoadsTheModulesInOrder() {
        let script = InitScript.text(modules: KernelPackage.moduleLoadOrder)
        let positions = KernelPackage.moduleLoadOrder.map { module in
            script.range(of: "insmod /lib/kiln-modules/\(module).ko")?.lowerBound
        }
        #expect(positions.allSatisfy { $0 != nil })
        #expect(positions.compactMap { $0 } == positions.compactMap { $0 }.sorted())
        #expect(script.hasPrefix("#!/bin/sh\n"))
        #expect(script.contains("exec /kiln/agent --port agent"))
    }
}
