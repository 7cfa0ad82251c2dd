import Foundation
import KilnVM
import KilnWire
import Testing

/// The manifest's `hostile-*` methods, on both backends: each tries to hurt its VM, its
/// neighbours or the host, and each test checks that only the method suffers and that the VM
/// (where it survives) serves the next call. Methods run as `nobody`, under a process limit, in
/// a scratch space held to half of the VM's memory.
@Suite("Hostile methods", .serialized)
struct HostileMethodTests {
    /// The next call on the VM works and finds the scratch space and the process table clean
    /// (the reset between calls cleared them).
    func servesOn(_ vm: any MicroVM) async throws {
        try await vm.reset()
        // The method's user's processes, but for this shell and what it runs.
        let after = try await vm.exec(Fixture.shell(
            "ls -A /tmp; echo ---; me=$$; ps -o pid,ppid,user | awk -v me=$me '$3 == \"nobody\" && $1 != me && $2 != me' | wc -l"))
        #expect(after.status == .ok, "stderr: \(after.stderr)")
        let parts = String(decoding: after.output, as: UTF8.self).components(separatedBy: "---\n")
        #expect(parts.first?.trimmingCharacters(in: .whitespacesAndNewlines) == "", "scratch after the reset: \(parts)")
        #expect(parts.last?.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "processes of the method's user left: \(parts)")
    }

    @Test(arguments: Backend.allCases)
    func aMemoryBombIsEndedByTheOOMKillerAndTheAgentSurvives(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let result = try await vm.exec(try Fixture.request("hostile-memory", image: image))
            #expect(result.status == .error)
            #expect(result.outOfMemory, "exit \(result.exitCode): \(result.stderr)")
            #expect(result.stderr.contains("out-of-memory killer"))
            try await servesOn(vm)
        }
    }

    /// A folder chain deeper than the agent has file descriptors for (its limit, plus 64; at
    /// most 1,900, where a shell's path would outgrow PATH_MAX): the wipe cannot empty scratch
    /// with one descriptor a level, so the reset fails and the guest must not serve again, or,
    /// where the wipe did manage (a sandbox with a higher limit), the next call finds scratch
    /// empty. Never does the next call meet the chain.
    @Test(arguments: Backend.allCases)
    func aTreeDeeperThanTheAgentsDescriptorsNeverReachesTheNextCall(backend: Backend) async throws {
        try await withVM(backend) { vm in
            let made = try await vm.exec(Fixture.shell(
                "n=$(($(ulimit -n) + 64)); [ $n -gt 1900 ] && n=1900; i=0; while [ $i -lt $n ]; do mkdir d && cd d || exit 1; i=$((i + 1)); done; echo $n",
                deadlineMs: 120_000, resetAfter: true))
            #expect(made.status == .ok, "\(made.stderr)")
            let after: GuestFrame.ExecResult
            do {
                after = try await vm.exec(Fixture.shell("ls -A /tmp"))
            } catch {
                // The guest powered off rather than serve: what a failed reset must do.
                return
            }
            #expect(after.status == .ok && after.output.isEmpty, "the next call met: \(String(decoding: after.output, as: UTF8.self))")
        }
    }

    @Test(arguments: Backend.allCases)
    func aForkBombStopsAtTheProcessLimit(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let result = try await vm.exec(try Fixture.request("hostile-fork-bomb", deadlineMs: 3_000, image: image))
            #expect(result.status == .timeout, "\(result.status): \(result.stderr)")
            try await servesOn(vm)
        }
    }

    /// The limit the bomb meets: the method user's processes (256 in a VM, the cgroup's 1024 in a
    /// sandbox). A method asks for more sleepers than that and counts those it got. The VM is
    /// booted with room for them: in the small profile's 128 MB the method cgroup's memory (half
    /// of what is free at boot) ends a bomb at about 150 processes, before this limit.
    @Test(arguments: Backend.allCases)
    func theMethodUserCannotExceedItsProcessLimit(backend: Backend) async throws {
        let asked = backend == .qemu ? 300 : 1_100
        let roomy = VMProfile(name: "roomy", vcpus: 1, memoryMB: 384)
        try await withVM(backend, booting: roomy) { vm in
            // The subshell dies when a fork fails; the count then takes builtins only (no fork is
            // left). A sleeper not yet past its exec is still named sh: those count too, but for
            // this shell itself.
            let result = try await vm.exec(Fixture.shell("""
                (i=0; while [ $i -lt \(asked) ]; do sleep 600 & i=$((i + 1)); done) 2>/dev/null
                n=0; for d in /proc/[0-9]*; do c=; read -r c <$d/comm 2>/dev/null; case "$c" in sleep|sh) n=$((n + 1));; esac; done; echo $((n - 1))
                """, deadlineMs: Fixture.heavyWorkDeadlineMs))
            #expect(!result.outOfMemory, "the VM's memory, not its process limit, ended the bomb: \(result.stderr.suffix(200))")
            let running = Int(String(decoding: result.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            let limit = backend == .qemu ? 256 : 1_024
            #expect(running > limit / 2 && running < limit, "\(running) of \(asked) sleepers started; \(result.stderr.suffix(200))")
            try await servesOn(vm)
        }
    }

    @Test(arguments: Backend.allCases)
    func aFullScratchSpaceGivesTheMethodENOSPCAndIsWipedByTheReset(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let result = try await vm.exec(try Fixture.request("hostile-fill-tmp", image: image))
            #expect(result.status == .ok, "\(result.stderr)")
            #expect(try Fixture.output(of: result) == "full")
            try await servesOn(vm)
        }
    }

    @Test(arguments: Backend.allCases)
    func aFloodOnStdoutIsCutAtTheAnswerLimit(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let result = try await vm.exec(try Fixture.request("hostile-flood", image: image))
            #expect(result.status == .error)
            #expect(result.stderr.contains("stdout exceeded"), "\(result.stderr)")
            let noisy = try await vm.exec(Fixture.shell("head -c 20000000 /dev/zero >&2; echo done"))
            #expect(noisy.status == .ok)
            #expect(noisy.stderr.utf8.count <= 4_096 + 200, "stderr kept: \(noisy.stderr.utf8.count) bytes")
            try await servesOn(vm)
        }
    }

    @Test(arguments: Backend.allCases)
    func aMethodReachesNoNetwork(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let result = try await vm.exec(try Fixture.request("hostile-network", image: image))
            #expect(try Fixture.output(of: result) == "refused", "\(result.stderr)")
        }
    }

    @Test(arguments: Backend.allCases)
    func aMethodCannotSignalTheAgentOpenItsChannelChrootOrWriteTheImage(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let result = try await vm.exec(try Fixture.request("hostile-escape", image: image))
            #expect(try Fixture.output(of: result) == "contained", "\(result.stderr)")
            let who = try await vm.exec(Fixture.shell("id -u; cat /etc/hostname"))
            #expect(String(decoding: who.output, as: UTF8.self).split(separator: "\n") == ["65534", "kiln-guest"])
            try await servesOn(vm)
        }
    }

    @Test(arguments: Backend.allCases)
    func aChildThatDetachesDoesNotOutliveTheResetNorMeetAnotherMethod(backend: Backend) async throws {
        let image = try Fixture.image()
        func sleepers(as method: String, on vm: any MicroVM) async throws -> String {
            let result = try await vm.exec(GuestFrame.ExecRequest(
                id: "count-\(UUID().uuidString.prefix(6))", method: method, entry: ["/bin/sh", "-c", "ps -o comm | grep -c '^sleep' || true"],
                payload: [], deadlineMs: Fixture.generousDeadlineMs))
            return String(decoding: result.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try await withVM(backend) { vm in
            let result = try await vm.exec(try Fixture.request("hostile-detach", image: image))
            #expect(try Fixture.output(of: result) == "detached")
            // It outlives its call (another session, out of the process group the call ended)…
            #expect(try await sleepers(as: "hostile-detach", on: vm) == "1", "the detached child runs on until the reset")
            // …until the reset, which kills it.
            try await vm.reset()
            #expect(try await sleepers(as: "hostile-detach", on: vm) == "0")
            // And another method never meets it: the agent clears what a method left before the
            // next method's code runs.
            _ = try await vm.exec(try Fixture.request("hostile-detach", image: image))
            #expect(try await sleepers(as: "someone-else", on: vm) == "0")
        }
    }
}
