import Glibc
import KilnWire

/// The agent's main loop: greet, then serve one frame at a time until the host goes away; on a
/// virtio port, wait for the next host (a restored clone's) and greet it again.
struct Agent {
    /// 0.2 takes `exec-batch`; 0.3 reports each call's CPU time (`cpu_us`).
    static let version = "0.3.0"

    private let options: AgentOptions
    private var port: GuestPort
    private var runner: MethodRunner
    private var runtimes: ServeRuntimes
    private let methods: MethodTable
    private var rootFilesystems: RootFilesystems
    private var housekeeping: Housekeeping
    private let scratch: ScratchFolder
    private var entropy = EntropyMixer()
    /// The method whose code has run here since everything was last cleared: before another
    /// method's code runs, nothing of it may remain (processes, runtimes, scratch files).
    private var tenant: String?
    /// The exec just answered asked for a reset once its result is sent (`reset_after`).
    private var resetAfterReply = false

    init(options: AgentOptions) {
        self.options = options
        self.port = GuestPort(source: options.channel)
        self.runner = MethodRunner(scratch: options.scratch)
        self.runtimes = ServeRuntimes(scratch: options.scratch)
        self.methods = MethodTable.load(path: options.manifest)
        self.housekeeping = Housekeeping(ownsMachine: self.port.reconnects, methodCgroup: options.methodCgroup)
        // Methods find programs by name in these folders; their working directory is scratch.
        setenv("PATH", "/kiln/bin:/bin:/sbin:/usr/bin:/usr/sbin", 1)
        self.scratch = ScratchFolder(path: options.scratch)
        _ = chdir(options.scratch)
        // A host that disappears mid-write must not kill the agent.
        signal(SIGPIPE, SIG_IGN)
        // Methods run unprivileged; a fork bomb stops at the user's process limit (in a sandbox,
        // the cgroup's pids.max does, since the limit would count the host's processes of that user).
        let maxProcesses = options.methodMaxProcesses ?? (options.sandboxRoot == nil ? ProgramSpawner.MethodUser.nobody.maxProcesses : 0)
        ProgramSpawner.user = options.methodUser.map { .init(uid: $0.uid, gid: $0.gid, maxProcesses: maxProcesses) }
        if let cgroup = options.methodCgroup {
            // Opened once, written by every child before it executes; a guest without cgroup2
            // runs its methods without it.
            let fd = open(cgroup + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
            if fd >= 0 { ProgramSpawner.cgroupProcs = fd } else { AgentLog.write("kiln-agent: no method cgroup at \(cgroup)") }
        }
        // Root file systems before any method starts (warm runtimes run on theirs).
        let memoryMB = options.reportedMemoryMB.map(UInt64.init) ?? Housekeeping.profileMemoryMB() ?? Housekeeping.memoryTotalMB()
        rootFilesystems = RootFilesystems(table: options.rootfsTable, mountedLowers: Set(options.rootfsFolders.keys),
                                          scratch: options.scratch, writableMB: memoryMB / 4)
        rootFilesystems.mountAll(folderMounted: !options.rootfsFolders.isEmpty)
        for (name, method) in methods.methods {
            guard let rootfs = method.rootfs else { continue }
            if let placement = rootFilesystems.placement(of: rootfs) {
                ProgramSpawner.placements[name] = placement
            } else {
                ProgramSpawner.unplaceable[name] = "its root file system \(rootfs) is not mounted (see the console)"
            }
        }
        // The out-of-memory killer takes a method, never the agent that answers for it.
        Housekeeping.protectFromOOMKiller()
        // Before the first greeting: a snapshot template taken after it holds these runtimes
        // running, so every restored clone has them without starting them.
        runtimes.startWarm(methods.warm(memoryMB: memoryMB),
                          waitUs: Housekeeping.warmWaitUs() ?? ServeRuntimes.defaultWarmWaitUs)
    }

    mutating func run() -> Never {
        // What the greeting reports about the machine does not change across a restore: read it
        // once, so that a restored clone only takes the time before it greets.
        var greeting = Housekeeping.hello(version: Self.version)
        if let vcpus = options.reportedVCPUs { greeting.vcpus = vcpus }
        if let memory = options.reportedMemoryMB { greeting.memoryMB = memory }
        var connections = 0
        while true {
            port.open()
            connections += 1
            greeting.uptimeUs = Housekeeping.uptimeMicroseconds()
            if port.send(.hello(greeting)) {
                // From the second connection on, this guest is (very likely) a restored clone: its
                // kernel RNG state is shared with every other clone of the same template. Reseed
                // after greeting, while the host has nothing to send yet.
                if connections > 1 { entropy.reseedAfterRestore() }
                serve()
            }
            port.close()
            guard port.reconnects else {
                // Without a host to come back, nothing the agent started may stay behind.
                runtimes.killAll()
                exit(0)
            }
        }
    }

    /// Serves frames until the host goes away.
    private mutating func serve() {
        while true {
            let body: [UInt8]?
            do {
                body = try port.nextFrame()
            } catch {
                // A length prefix over the limit: the stream is out of step and cannot be resynced.
                _ = port.send(.error(.init(message: "malformed frame: \(error); closing the channel")))
                return
            }
            guard let body else { return }
            let reply: GuestFrame?
            do {
                let frame = try GuestFrame.decodeValue(body: body)
                if case .execBatch(let batch) = frame {
                    entropy.mix(body.prefix(256))
                    guard serve(batch) else { return }
                    continue
                }
                reply = handle(frame, body: body)
            } catch {
                reply = .error(.init(message: "malformed frame: \(error)"))
            }
            if let reply, !port.send(reply) { return }
            if !resetIfAsked() { powerOffAfterFailedReset() }
        }
    }

    /// Runs a batch's calls in order, each answered as it ends and followed by the reset it
    /// asked for; once one ends the VM's use (a timeout or a crash), the rest are answered
    /// `not_run`. False when the host went away.
    private mutating func serve(_ batch: GuestFrame.ExecBatch) -> Bool {
        var ended = false
        for (index, request) in batch.calls.enumerated() {
            guard !ended else {
                guard port.send(.result(.notRun(request.id))) else { return false }
                continue
            }
            let result = answer(request)
            guard port.send(.result(result)) else { return false }
            guard resetIfAsked() else {
                // The calls after it must not meet what outlived the kill: they go elsewhere.
                for later in batch.calls[(index + 1)...] {
                    guard port.send(.result(.notRun(later.id))) else { break }
                }
                powerOffAfterFailedReset()
            }
            ended = result.status == .timeout || result.crashed
        }
        return true
    }

    /// The reset the exec just answered asked for (`reset_after`); false when it failed.
    private mutating func resetIfAsked() -> Bool {
        guard resetAfterReply else { return true }
        resetAfterReply = false
        return reset(keepingRuntime: true)
    }

    /// Nobody can be told: the next call must not meet what outlived the kill.
    private func powerOffAfterFailedReset() -> Never {
        AgentLog.write("kiln-agent: what the last method left (processes or files) outlived the reset; powering off")
        housekeeping.powerOff()
    }

    /// Runs one call, and notes the reset it asks for once its result is sent.
    private mutating func answer(_ request: GuestFrame.ExecRequest) -> GuestFrame.ExecResult {
        // One reap before each call (and one in each reset) collects what ended since (orphans,
        // and a serve runtime that died between calls, which the call must not be blamed for):
        // the runtimes judge whether they are up from it rather than asking the kernel again.
        reapOrphans()
        var result = execute(request)
        resetAfterReply = request.resetAfter
        result.resetPending = request.resetAfter
        return result
    }

    private mutating func handle(_ frame: GuestFrame, body: [UInt8]) -> GuestFrame? {
        switch frame {
        case .exec(let request):
            entropy.mix(body.prefix(256))
            return .result(answer(request))
        case .ping:
            return .pong(Housekeeping.pong())
        case .reset(let scope):
            guard reset(keepingRuntime: scope.keepRuntime) else {
                return .error(.init(message: "reset: processes or files of the last method remain; this guest must not serve another call"))
            }
            return .resetOK
        case .shutdown:
            runtimes.killAll()
            port.close()
            housekeeping.powerOff()
        case .execBatch(let batch):
            // Served by the loop, which answers each call as it ends.
            return .error(.init(message: "a batch of \(batch.calls.count) calls reached the single-frame path"))
        case .hello, .result, .pong, .resetOK, .error:
            return .error(.init(message: "unexpected '\(frame.type)' frame from the host"))
        }
    }

    /// Clears what the last method left: scratch only when its serve-mode runtime is kept and
    /// still running, else everything. False when not everything could be cleared.
    private mutating func reset(keepingRuntime: Bool) -> Bool {
        // A runtime that ended after its answer is known only once reaped: then everything goes.
        reapOrphans()
        if keepingRuntime, let tenant, runtimes.isRunning(tenant) {
            return scratch.wipe()
        }
        return clearEverything()
    }

    /// Collects the children that have exited; the runtimes learn which of them were theirs.
    private mutating func reapOrphans() {
        for orphan in housekeeping.reapOrphans() { runtimes.noteReaped(pid: orphan.pid, status: orphan.status) }
    }

    /// Runs a builtin, a serve-mode call or an exec-mode program.
    private mutating func execute(_ request: GuestFrame.ExecRequest) -> GuestFrame.ExecResult {
        let started = monotonicMicroseconds()
        if let answer = Builtins.answer(request, started: started) { return answer }
        admit(request.method)
        return methods.isServe(request.method) ? runtimes.call(request) : runner.run(request)
    }

    /// Makes way for `method`'s code: the runtimes of other methods go (warm ones included), and
    /// when another method's code ran since the last clear, everything it left goes too.
    private mutating func admit(_ method: String) {
        runtimes.killAll(except: method)
        if let tenant, tenant != method, !clearEverything() {
            // What another method left outlived the clear: this one must not meet it.
            AgentLog.write("kiln-agent: what the last method left (processes or files) outlived the clear; powering off")
            housekeeping.powerOff()
        }
        tenant = method
    }

    /// Kills every process methods started (runtimes included) and empties scratch; false when
    /// some process outlived the kill or something stayed in scratch.
    private mutating func clearEverything() -> Bool {
        runtimes.killAll()
        runner.killSpawnedGroups()
        let cleared = housekeeping.killEverything()
        let wiped = scratch.wipe()
        rootFilesystems.wipeWrites()
        tenant = nil
        return cleared && wiped
    }
}
