import Foundation
import Glibc
import KilnWire
import Logging

/// Starts one QEMU and brings its agent to `hello`: sockets, the process (in its cgroup), the QMP
/// handshake, the incoming migration for a restore. On any failure, or when the agent has not
/// greeted by the deadline, QEMU is killed by PID and its folder removed; the error carries the
/// ends of the console and QEMU logs.
struct QEMULauncher: Sendable {
    /// How the guest starts.
    enum Start: Sendable {
        case boot(image: GuestImage, sharedMemoryFile: String?)
        case restore(SnapshotTemplate)
    }

    let qemu: String
    let hostKHz: Int
    let cgroups: CgroupLayout?
    /// The image's root file systems, attached to every guest (see ``QEMUCommandLine/blockDevices``).
    let blockDevices: [String]
    let logger: Logger

    /// A QEMU that runs and answers QMP, with the agent socket connected; for a restore, it waits
    /// for its incoming migration (a standby can wait there as long as it likes: no vCPU runs).
    struct Started: Sendable {
        let id: String
        let process: ChildProcess
        let directory: String
        let session: AgentSession
        let monitor: QMPClient
        let cage: CgroupCage?
        let consoleLog: String
        let qemuLog: String
    }

    /// How long a booting guest's warm runtimes may take to get ready: three quarters of the
    /// boot timeout (the rest left for the kernel and the agent before and the greeting after),
    /// and at most 90 s: a runtime that never says it is ready must not hold a boot for longer
    /// (its first call then starts it), however long the host lets a boot take.
    static func warmWait(bootTimeout: Duration) -> Duration {
        min(bootTimeout * 3 / 4, .seconds(90))
    }

    /// Starts QEMU and brings it to `hello`.
    func launch(
        id: String, profile: VMProfile, accelerator: Accelerator, start: Start, directory: String,
        timeout: Duration
    ) async throws(VMError) -> (QEMULaunch, GuestFrame.Hello) {
        let deadline = ContinuousClock.now + timeout
        let started = try await self.start(id: id, profile: profile, accelerator: accelerator, start: start,
                                           directory: directory, deadline: deadline, timeout: timeout)
        let (launched, hello) = try await finish(started, start: start, deadline: deadline, timeout: timeout)
        guard case .boot = start, profile.memoryCeilingMB != nil else { return (launched, hello) }
        // A guest booted with its ceiling's RAM gives all but the profile's memory to the balloon
        // (a restore inherits that from its template).
        do {
            try await launched.monitor.setBalloon(guestMB: profile.memoryMB, vm: id, until: deadline)
        } catch {
            await launched.session.close()
            throw await abandon(process: launched.process, cage: launched.cage, monitor: launched.monitor, directory: directory,
                                explaining: error, timeout: timeout)
        }
        return (launched, hello)
    }

    /// Starts QEMU up to the point where it waits: for a boot, the guest is already booting; for
    /// a restore, QEMU waits for ``finish(_:start:deadline:timeout:)`` to send the state.
    func start(
        id: String, profile: VMProfile, accelerator: Accelerator, start: Start, directory: String,
        deadline: ContinuousClock.Instant, timeout: Duration
    ) async throws(VMError) -> Started {
        let began = ContinuousClock.now
        let agentPath = directory + "/agent.sock"
        let consoleLog = directory + "/console.log"
        let qemuLog = directory + "/qemu.log"
        var optionPaths = [directory, consoleLog] + blockDevices
        switch start {
        case .boot(_, let shared?): optionPaths.append(shared)
        case .restore(let template): optionPaths.append(template.memoryFile)
        case .boot(_, nil): break
        }
        for path in optionPaths where path.contains(",") {
            throw .hostFailure("QEMU option values cannot hold commas; move \(path) to a path without one")
        }

        var toClose: [Int32] = []
        defer { toClose.forEach { close($0) } }
        let listener = try UnixSocket.listen(path: agentPath)
        toClose.append(listener)
        let (qmpHost, qmpGuest) = try UnixSocket.pair()
        toClose.append(qmpGuest)
        let logFD = open(qemuLog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard logFD >= 0 else {
            close(qmpHost)
            throw .hostFailure("cannot create \(qemuLog): \(String(cString: strerror(errno)))")
        }
        toClose.append(logFD)
        var descriptors: [Int32?] = [nil, logFD, logFD, listener, qmpGuest]
        let commandStart: QEMUCommandLine.Start
        switch start {
        case .boot(let image, let shared):
            commandStart = .boot(kernel: image.kernel, initrd: image.initrd,
                                 append: QEMUCommandLine.kernelArguments(hostKHz: hostKHz, memoryMB: profile.memoryMB,
                                                                         warmWait: Self.warmWait(bootTimeout: timeout)),
                                 sharedMemoryFile: shared)
        case .restore(let template):
            let stateFD = open(template.stateFile, O_RDONLY | O_CLOEXEC)
            guard stateFD >= 0 else {
                close(qmpHost)
                throw .hostFailure("cannot open \(template.stateFile): \(String(cString: strerror(errno)))")
            }
            toClose.append(stateFD)
            descriptors.append(stateFD)
            commandStart = .restore(memoryFile: template.memoryFile)
        }
        let command = QEMUCommandLine(qemu: qemu, accelerator: accelerator, vcpus: profile.vcpus, memoryMB: profile.bootMemoryMB,
                                      balloon: profile.memoryCeilingMB != nil, start: commandStart, consoleLog: consoleLog,
                                      agentSocketFD: 3, qmpSocketFD: 4, blockDevices: blockDevices)

        let beforeCage = ContinuousClock.now
        var cage: CgroupCage?
        if let cgroups {
            do {
                cage = try CgroupCage(layout: cgroups, name: "\(getpid())-\(id)", limits: ResourceLimits(
                    cpus: Double(profile.vcpus), memoryMB: profile.bootMemoryMB + QEMUDriver.qemuOverheadMB))
            } catch {
                logger.warning("vm runs without a cgroup", metadata: ["vm": "\(id)", "reason": "\(error)"])
            }
        }
        guard let executable = HostCommand.resolve(qemu) else {
            close(qmpHost)
            cage?.remove()
            throw .spawnFailed("\(qemu) not found; install qemu-system-x86 (deploy/local/install-deps.sh)")
        }
        let beforeSpawn = ContinuousClock.now
        let process: ChildProcess
        do {
            process = try await ProcessLauncher.shared.spawn(SpawnSpec(
                executable: executable, arguments: command.arguments, environment: ["PATH": "/usr/bin:/bin"],
                descriptors: descriptors, cgroupProcsFiles: cage?.procsFiles ?? []))
        } catch {
            close(qmpHost)
            cage?.remove()
            throw .spawnFailed("\(error)")
        }
        toClose.forEach { close($0) }
        toClose.removeAll()
        let spawned = ContinuousClock.now

        let monitor = QMPClient(fd: qmpHost, vmID: id)
        let session: AgentSession
        do {
            let agentFD = try UnixSocket.connect(path: agentPath)
            unlink(agentPath)  // QEMU holds the listening socket; nothing needs the name any more
            let logs = (console: consoleLog, qemu: qemuLog)
            session = AgentSession(vmID: id, channel: GuestChannel(fd: agentFD), logger: logger) {
                guard let status = process.exitStatus else { return nil }
                return "QEMU \(status); \(Self.logTails(console: logs.console, qemu: logs.qemu))"
            }
        } catch {
            await abandon(process: process, cage: cage, monitor: monitor, directory: directory)
            throw error
        }

        do {
            try await monitor.handshake(until: deadline)
            if case .restore = start {
                try await monitor.execute("migrate-set-capabilities",
                                          arguments: #"{"capabilities":[{"capability":"x-ignore-shared","state":true}]}"#,
                                          until: deadline)
            }
        } catch {
            await session.close()
            throw await abandon(process: process, cage: cage, monitor: monitor, directory: directory,
                                explaining: error, timeout: timeout)
        }
        logger.debug("qemu started", metadata: [
            "vm": "\(id)", "prep_ms": "\(Self.ms(began, beforeCage))", "cage_ms": "\(Self.ms(beforeCage, beforeSpawn))",
            "spawn_ms": "\(Self.ms(beforeSpawn, spawned))", "qmp_ms": "\(Self.ms(spawned, .now))",
        ])
        return Started(id: id, process: process, directory: directory, session: session, monitor: monitor, cage: cage,
                       consoleLog: consoleLog, qemuLog: qemuLog)
    }

    /// Sends the snapshot state (for a restore) and waits for the agent's hello.
    func finish(
        _ started: Started, start: Start, deadline: ContinuousClock.Instant, timeout: Duration
    ) async throws(VMError) -> (QEMULaunch, GuestFrame.Hello) {
        let began = ContinuousClock.now
        do throws(VMError) {
            if case .restore = start {
                guard started.process.isRunning else {
                    throw .vmDied(vm: started.id, during: "restore", detail: "QEMU \(started.process.exitStatus?.description ?? "ended") before the restore")
                }
                try await started.monitor.execute("migrate-incoming", arguments: #"{"uri":"fd:5"}"#, until: deadline)
            }
            let incoming = ContinuousClock.now
            let hello = try await started.session.awaitHello(within: ContinuousClock.now.duration(to: deadline),
                                                             step: start.isRestore ? "restore" : "boot")
            logger.debug("qemu greeted", metadata: [
                "vm": "\(started.id)", "incoming_ms": "\(Self.ms(began, incoming))", "hello_ms": "\(Self.ms(incoming, .now))",
            ])
            return (QEMULaunch(process: started.process, directory: started.directory, session: started.session,
                               monitor: started.monitor, cage: started.cage), hello)
        } catch {
            await started.session.close()
            throw await abandon(process: started.process, cage: started.cage, monitor: started.monitor,
                                directory: started.directory, explaining: error, timeout: timeout)
        }
    }

    /// Kills a started QEMU and removes its folder.
    func abandon(_ started: Started) async {
        await started.session.close()
        await abandon(process: started.process, cage: started.cage, monitor: started.monitor, directory: started.directory)
    }

    /// Adds the ends of the logs to an error.
    private static func enrich(_ error: VMError, console: String, qemu: String, timeout: Duration) -> VMError {
        let tails = logTails(console: console, qemu: qemu)
        switch error {
        case .timedOut(let vm, let step, let after, _):
            return .timedOut(vm: vm, step: step, after: after == .zero ? timeout : after, detail: tails)
        case .vmDied(let vm, let during, let detail):
            return .vmDied(vm: vm, during: during, detail: detail.contains("console:") ? detail : "\(detail); \(tails)")
        case .monitorError(let vm, let command, let detail):
            return .monitorError(vm: vm, command: command, detail: "\(detail); \(tails)")
        default:
            return error
        }
    }

    private static func ms(_ from: ContinuousClock.Instant, _ to: ContinuousClock.Instant) -> String {
        String(format: "%.1f", from.duration(to: to).microseconds / 1000)
    }

    /// Kills QEMU, then — once it has ended and its logs are complete — adds their ends to
    /// `error`, and removes the VM's folder.
    private func abandon(
        process: ChildProcess, cage: CgroupCage?, monitor: QMPClient, directory: String,
        explaining error: VMError, timeout: Duration
    ) async -> VMError {
        await monitor.close()
        await process.kill(timeout: .seconds(5))
        let explained = Self.enrich(error, console: directory + "/console.log", qemu: directory + "/qemu.log", timeout: timeout)
        cage?.remove()
        removeTree(directory)
        return explained
    }

    private func abandon(process: ChildProcess, cage: CgroupCage?, monitor: QMPClient, directory: String) async {
        await monitor.close()
        await process.kill(timeout: .seconds(5))
        cage?.remove()
        removeTree(directory)
    }

    /// The last lines of the guest console and of QEMU's own output, for error messages.
    static func logTails(console: String, qemu: String) -> String {
        func tail(_ path: String) -> String {
            let text = readFile(path).map { String(decoding: $0.suffix(600), as: UTF8.self) } ?? ""
            return text.split(separator: "\n").suffix(6).joined(separator: " | ")
        }
        return "console: \(tail(console)); qemu: \(tail(qemu))"
    }
}

extension QEMULauncher.Start {
    var isRestore: Bool {
        if case .restore = self { return true }
        return false
    }
}
