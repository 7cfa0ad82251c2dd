import Foundation
import KilnVM
import KilnWire
import Testing

/// What every backend must do, with real QEMU guests (restored from a snapshot template) and real
/// sandboxes. Serialized: timings stay meaningful on a 2-core host.
@Suite("MicroVM backends", .serialized)
struct MicroVMTests {
    @Test(arguments: Backend.allCases)
    func echoRoundTrip(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            #expect(vm.backend.name == backend.rawValue)
            let hello = try #require(await vm.hello)
            #expect(hello.vcpus == UInt32(vm.profile.vcpus))
            #expect((64...UInt32(vm.profile.memoryMB)).contains(hello.memoryMB), "memory \(hello.memoryMB) MiB")
            #expect(!hello.agentVersion.isEmpty)
            let args: MessagePackValue = ["text": "hello from the guest", "n": 42, "blob": .binary([0, 1, 2, 255])]
            let result = try await vm.exec(try Fixture.request("echo", args, image: image))
            #expect(result.status == .ok, "stderr: \(result.stderr)")
            #expect(result.exitCode == 0)
            #expect(try Fixture.output(of: result) == args)
            #expect(result.maxrssKB > 0)
            #expect(result.execUs > 0)
        }
    }

    @Test(arguments: Backend.allCases)
    func methodsComputeInTheGuest(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let sha = try await vm.exec(try Fixture.request("sha256", ["data": "abc"], image: image))
            #expect(try Fixture.output(of: sha) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
            let burn = try await vm.exec(try Fixture.request("burn", ["ms": 50], image: image))
            #expect(burn.status == .ok, "stderr: \(burn.stderr)")
            #expect(burn.execUs >= 50_000)
            let context: MessagePackValue = ["locals": ["step": 3]]
            let echo = try await vm.exec(GuestFrame.ExecRequest(
                id: "ctx", method: "echo", entry: image.manifest.guestEntry(for: "echo")!,
                payload: try Fixture.payload(["x": 1], context: context), deadlineMs: Fixture.generousDeadlineMs))
            #expect(try MessagePackDecoder().decodeValue(from: echo.output)["context"] == context)
        }
    }

    @Test(arguments: Backend.allCases)
    func deadlineKillsSleepAndFailReportsItsExit(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let slept = try await vm.exec(try Fixture.request("sleep", ["ms": 30_000], deadlineMs: 300, image: image))
            #expect(slept.status == .timeout)
            #expect(slept.exitCode == 128 + 9)
            #expect(slept.execUs >= 300_000)
            // Ended by the agent at the deadline: a method that ran on would have been killed
            // with its VM by the host after its grace, which throws instead of answering.
            #expect(slept.stderr.contains("deadline"))

            let failed = try await vm.exec(try Fixture.request("fail", ["message": "bad input"], image: image))
            #expect(failed.status == .error)
            #expect(failed.exitCode == 3)
            #expect(failed.stderr.contains("fail: bad input"))
            #expect(failed.output.isEmpty)
            #expect(!failed.crashed, "an exit code is a failure, not a crash")

            // Killed by a signal it did not get from the agent: a crash, which taints the VM.
            let killed = try await vm.exec(Fixture.shell("kill -SEGV $$"))
            #expect(killed.status == .error && killed.exitCode == 128 + SIGSEGV, "\(killed.exitCode): \(killed.stderr)")
            #expect(killed.crashed)
            #expect(!slept.crashed, "a deadline is a timeout, not a crash")

            // The VM is still usable after all three.
            let echo = try await vm.exec(try Fixture.request("echo", ["after": true], image: image))
            #expect(echo.status == .ok)
        }
    }

    @Test(arguments: Backend.allCases)
    func largePayloadsAndOutputsCrossTheChannel(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            // 1 MiB: a 128 MiB guest leaves methods ~30 MiB (its kernel and its 21 MiB root file
            // system in RAM take the rest), and echo holds a few copies of its input.
            let blob = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
            let echo = try await vm.exec(try Fixture.request("echo", ["blob": .binary(blob)], image: image))
            #expect(echo.status == .ok, "exit \(echo.exitCode), stderr: \(echo.stderr), maxrss \(echo.maxrssKB) KiB")
            #expect(try Fixture.output(of: echo)?["blob"] == .binary(blob))

            // More stdout than the agent keeps: the program is stopped and the exec is an error.
            let flood = try await vm.exec(Fixture.shell("head -c 9000000 /dev/zero", deadlineMs: Fixture.heavyWorkDeadlineMs))
            #expect(flood.status == .error)
            #expect(flood.stderr.contains("exceeded"), "\(flood.stderr)")
            _ = try await vm.ping()
        }
    }

    @Test(arguments: Backend.allCases)
    func aMissingProgramIsAnErrorNotACrash(backend: Backend) async throws {
        try await withVM(backend) { vm in
            let result = try await vm.exec(GuestFrame.ExecRequest(
                id: "missing", method: "nope", entry: ["/kiln/bin/no-such-program"], payload: [], deadlineMs: Fixture.generousDeadlineMs))
            #expect(result.status == .error)
            #expect(result.exitCode == 127)
            #expect(result.stderr.contains("no-such-program"))
            _ = try await vm.ping()
        }
    }

    @Test(arguments: Backend.allCases)
    func malformedFrameGetsAnErrorAndTheAgentCarriesOn(backend: Backend) async throws {
        try await withVM(backend) { vm in
            // A 3-byte frame holding one fixint and two trailing bytes.
            let answer = try await backend.raw([0, 0, 0, 3, 0x01, 0x02, 0x03], to: vm)
            guard case .error(let error) = answer else {
                Issue.record("expected an error frame, got \(answer)")
                return
            }
            #expect(error.message.contains("malformed"))
            let unknown = try await backend.raw(FrameBuffer.frame(try MessagePackEncoder().encode(["v": 1, "type": "dance"] as MessagePackValue)), to: vm)
            if case .error = unknown {} else { Issue.record("expected an error frame for an unknown type, got \(unknown)") }
            let pong = try await vm.ping()
            #expect(pong.uptimeUs > 0)
            #expect(pong.load1 >= 0)
            #expect(pong.memAvailableKB > 0)
        }
    }

    @Test(arguments: Backend.allCases)
    func resetRemovesWhatThePreviousRunLeft(backend: Backend) async throws {
        try await withVM(backend) { vm in
            let wrote = try await vm.exec(Fixture.shell(
                "echo secret > leftover.txt && mkdir -p deep/er && touch deep/er/file && (setsid sleep 1000 > /dev/null 2>&1 &) && ls -A"))
            #expect(wrote.status == .ok, "stderr: \(wrote.stderr)")
            #expect(String(decoding: wrote.output, as: UTF8.self).contains("leftover.txt"))

            try await vm.reset()

            let after = try await vm.exec(Fixture.shell("ls -A /tmp; echo ---; ps -o comm | grep -c '^sleep' || true"))
            let text = String(decoding: after.output, as: UTF8.self)
            let parts = text.components(separatedBy: "---\n")
            #expect(parts.first?.trimmingCharacters(in: .whitespacesAndNewlines) == "", "scratch after reset: \(text)")
            #expect(parts.last?.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "sleepers after reset: \(text)")
        }
    }

    /// `reset_after`: the agent resets right after answering, before it reads the next frame, so
    /// the next exec finds nothing of this one without a reset of its own.
    @Test(arguments: Backend.allCases)
    func anExecAskingToResetAfterLeavesNothingForTheNext(backend: Backend) async throws {
        try await withVM(backend) { vm in
            let wrote = try await vm.exec(Fixture.shell(
                "echo secret > leftover.txt && (setsid sleep 1000 > /dev/null 2>&1 &) && ls -A", resetAfter: true))
            #expect(wrote.status == .ok, "stderr: \(wrote.stderr)")
            #expect(wrote.resetPending, "the agent confirms the reset it will do")
            #expect(String(decoding: wrote.output, as: UTF8.self).contains("leftover.txt"))

            let after = try await vm.exec(Fixture.shell("ls -A /tmp; echo ---; ps -o comm | grep -c '^sleep' || true"))
            #expect(!after.resetPending, "no reset was asked for")
            let text = String(decoding: after.output, as: UTF8.self)
            let parts = text.components(separatedBy: "---\n")
            #expect(parts.first?.trimmingCharacters(in: .whitespacesAndNewlines) == "", "scratch after reset_after: \(text)")
            #expect(parts.last?.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "sleepers after reset_after: \(text)")
        }
    }

    @Test(arguments: Backend.allCases)
    func methodsHaveNoNetwork(backend: Backend) async throws {
        try await withVM(backend) { vm in
            // /proc/net belongs to the reader's network namespace; in the VM there is no NIC at all.
            let result = try await vm.exec(Fixture.shell(
                "sed 1,2d /proc/net/dev | cut -d: -f1 | tr -d ' '; echo ---; sed 1d /proc/net/route | wc -l"))
            #expect(result.status == .ok, "stderr: \(result.stderr)")
            let parts = String(decoding: result.output, as: UTF8.self).components(separatedBy: "---\n")
            let interfaces = parts[0].split(separator: "\n").map(String.init)
            #expect(interfaces == ["lo"], "interfaces: \(interfaces)")
            #expect(parts.last?.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "routes: \(parts.last ?? "")")
        }
    }

    @Test(arguments: Backend.allCases)
    func aKilledVMIsDetectedMidExec(backend: Backend) async throws {
        let image = try Fixture.image()
        let vm = try await backend.provision()
        let pid = backend.pid(of: vm)
        async let outcome: GuestFrame.ExecResult = vm.exec(try Fixture.request("sleep", ["ms": 20_000], deadlineMs: 30_000, image: image))
        // Give the call a moment to reach the guest; the outcome is the same if it has not.
        try await Task.sleep(for: .milliseconds(300))
        #expect(kill(pid, SIGKILL) == 0)
        do {
            let result = try await outcome
            Issue.record("exec returned \(result.status) from a killed VM")
        } catch let error as VMError {
            guard case .vmDied(let id, _, let detail) = error else {
                Issue.record("expected vmDied, got \(error)")
                await vm.destroy()
                return
            }
            #expect(id == vm.id)
            #expect(detail.contains("signal 9"), "\(detail)")
        }
        // Detected by the exit, not by the 30-second deadline: the error says the VM died.
        await #expect(throws: VMError.self) { _ = try await vm.ping() }
        await vm.destroy()
    }

    @Test(arguments: Backend.allCases)
    func eightInParallel(backend: Backend) async throws {
        let image = try Fixture.image()
        let vms = try await withThrowingTaskGroup(of: (any MicroVM).self) { group in
            for _ in 0..<8 { group.addTask { try await backend.provision() } }
            var made: [any MicroVM] = []
            for try await vm in group { made.append(vm) }
            return made
        }
        #expect(Set(vms.map(\.id)).count == 8)
        let outputs = try await withThrowingTaskGroup(of: MessagePackValue?.self) { group in
            for (index, vm) in vms.enumerated() {
                group.addTask {
                    let result = try await vm.exec(try Fixture.request("echo", ["vm": .uint(UInt64(index))], image: image))
                    return try Fixture.output(of: result)?["vm"]
                }
            }
            var seen: [MessagePackValue?] = []
            for try await output in group { seen.append(output) }
            return seen
        }
        #expect(Set(outputs.compactMap { $0?.uint64Value }) == Set(0..<8))
        for vm in vms { await vm.destroy() }
    }

    @Test(arguments: Backend.allCases)
    func nothingIsLeftBehindAfterDestroy(backend: Backend) async throws {
        let vm = try await backend.provision()
        let pid = backend.pid(of: vm)
        let directory = backend.directory(of: vm)
        #expect(processExists(pid))
        #expect(FileManager.default.fileExists(atPath: directory))
        let cgroups = cgroupFolders(containing: vm.id)
        _ = try await vm.exec(Fixture.shell("(setsid sleep 1000 > /dev/null 2>&1 &); echo started"))
        let stats = try await vm.stats()
        #expect(stats.pid == pid && stats.rssKB > 0 && stats.pssKB > 0)

        await vm.destroy()

        #expect(!processExists(pid))
        #expect(!FileManager.default.fileExists(atPath: directory))
        #expect(cgroups.allSatisfy { !FileManager.default.fileExists(atPath: $0) }, "\(cgroups)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: (directory as NSString).deletingLastPathComponent)
        #expect(!leftovers.contains(vm.id))
        // No process of ours still names the VM's folder (a QEMU, an agent, a sleeper).
        #expect(processesMentioning(vm.id).isEmpty)
        await #expect(throws: VMError.self) { _ = try await vm.ping() }
        await vm.destroy()  // idempotent
    }

    @Test(arguments: Backend.allCases)
    func resizeChangesTheHostLimits(backend: Backend) async throws {
        try await withVM(backend) { vm in
            let folders = cgroupFolders(containing: vm.id).filter { $0.contains("memory") || !$0.contains("/cpu/") }
            guard let memoryFolder = folders.first(where: { FileManager.default.fileExists(atPath: $0 + "/memory.limit_in_bytes") || FileManager.default.fileExists(atPath: $0 + "/memory.max") }) else {
                Issue.record("no memory cgroup for \(vm.id): \(folders)")
                return
            }
            let file = FileManager.default.fileExists(atPath: memoryFolder + "/memory.max") ? "/memory.max" : "/memory.limit_in_bytes"
            let memory = backend == .qemu ? 512 : 200
            try await vm.resize(ResourceLimits(cpus: 0.5, memoryMB: memory))
            let limit = try String(contentsOfFile: memoryFolder + file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(limit == "\(memory << 20)")
            _ = try await vm.ping()
            if backend == .qemu {
                await #expect(throws: VMError.self) { try await vm.resize(ResourceLimits(cpus: 1, memoryMB: 64)) }
            }
        }
    }
}

/// The cgroup folders (any hierarchy) of a VM.
func cgroupFolders(containing id: String) -> [String] {
    var found: [String] = []
    for hierarchy in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
        let group = hierarchy + "/kiln"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: group)) ?? [] where name.hasSuffix("-" + id) {
            found.append(group + "/" + name)
        }
    }
    return found
}

/// PIDs whose command line mentions `text`.
func processesMentioning(_ text: String) -> [Int32] {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
    return pids.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return String(decoding: data, as: UTF8.self).contains(text)
    }
}

/// What a call consumed, as the agent reports it: the method's CPU time in the guest.
@Suite("Usage per call")
struct UsageTests {
    /// A `burn` of 200 ms is charged at least five times the CPU of a `sleep` of 200 ms (a
    /// ratio, not a bound: a loaded host slows both), and at least three times its CPU on the
    /// host; a serve-mode call reports its CPU too.
    @Test(arguments: Backend.allCases)
    func aBurnIsChargedFarMoreCPUThanASleepOfTheSameLength(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            // The host's count of the VM's CPU, read around each call as the worker does.
            func hostCPU(of method: String) async throws -> (GuestFrame.ExecResult, UInt64) {
                let before = try #require(vm.hostCPUTimeUs(), "the host measures no CPU for the VM")
                let result = try await vm.exec(try Fixture.request(method, ["ms": 200], image: image))
                return (result, try #require(vm.hostCPUTimeUs()) - before)
            }
            let (burn, burnOnHost) = try await hostCPU(of: "burn")
            let (sleep, sleepOnHost) = try await hostCPU(of: "sleep")
            #expect(burn.status == .ok && sleep.status == .ok, "\(burn.stderr) \(sleep.stderr)")
            let burned = try #require(burn.cpuUs, "the agent reported no CPU time")
            let slept = try #require(sleep.cpuUs)
            #expect(burned >= 5 * max(slept, 1), "burn \(burned) µs against sleep \(slept) µs")
            // On the host a sleeping guest still costs its program's start and its timer ticks.
            #expect(burnOnHost >= 3 * max(sleepOnHost, 1), "on the host: burn \(burnOnHost) µs against sleep \(sleepOnHost) µs")
            let served = try await vm.exec(try Fixture.request("echo-serve", ["x": 1], image: image))
            #expect(served.status == .ok && served.cpuUs != nil, "\(served)")
        }
    }
}
