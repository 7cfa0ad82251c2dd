import Foundation
import KilnVM
import KilnWire
import Testing

/// Serve mode with real guests: runtimes that stay up across calls, are killed and started again
/// after a crash or a deadline, and never outlive a switch to another method. The methods are the
/// example manifest's `echo-serve` (the SDK's echo) and `wordcount` (warm; it counts the calls its
/// process has served, which tells one runtime from a restarted one).
@Suite("Serve mode", .serialized)
struct ServeModeTests {
    @Test(arguments: Backend.allCases)
    func serveEchoAnswersAThousandCallsOnOneVM(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            var execUs: [UInt64] = []
            for index in 0..<1_000 {
                let args: MessagePackValue = ["i": .uint(UInt64(index)), "text": .string("call \(index)")]
                let result = try await vm.exec(try Fixture.request("echo-serve", args, image: image))
                #expect(result.status == .ok, "call \(index): \(result.stderr)")
                #expect(try Fixture.output(of: result) == args)
                execUs.append(result.execUs)
                if result.status != .ok { break }
            }
            // Spawning a program per call costs milliseconds (under TCG, ~7); a runtime that stays
            // up answers in a fraction of that.
            let exec = try await vm.exec(try Fixture.request("echo", ["i": 0], image: image))
            let median = execUs.sorted()[execUs.count / 2]
            #expect(median * 5 < exec.execUs, "serve median \(median) µs, exec \(exec.execUs) µs")
        }
    }

    @Test(arguments: Backend.allCases)
    func theRuntimeStaysUpAcrossCallsAndKeepingResets(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            if backend == .process {
                // wordcount is warm: its runtime is up (and said it is ready) before the first call.
                #expect(childProcesses(of: backend.pid(of: vm)).contains { $0.contains("wordcount") })
            }
            #expect(try await runtimeCalls(vm, image) == 1)
            #expect(try await runtimeCalls(vm, image) == 2)
            try await vm.reset(keepingServeRuntime: true)
            #expect(try await runtimeCalls(vm, image) == 3)
            // The context goes in and comes back.
            let context: MessagePackValue = ["locals": ["cursor": 7]]
            let result = try await vm.exec(GuestFrame.ExecRequest(
                id: "ctx", method: "wordcount", entry: image.manifest.guestEntry(for: "wordcount")!,
                payload: try Fixture.payload(["text": "a b"], context: context), deadlineMs: Fixture.generousDeadlineMs))
            #expect(try MessagePackDecoder().decodeValue(from: result.output)["context"]?["locals"] == ["cursor": 7])
            // A plain reset clears everything: the next call gets a new runtime.
            try await vm.reset()
            #expect(try await runtimeCalls(vm, image) == 1)
        }
    }

    /// A runtime that answers with an error (here, args that are not the method's input) failed
    /// that call only: the result carries its error, nothing exited, and it serves on.
    @Test(arguments: Backend.allCases)
    func aReportedErrorFailsTheCallAndTheRuntimeServesOn(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            #expect(try await runtimeCalls(vm, image) == 1)
            let failed = try await vm.exec(try Fixture.request("wordcount", ["words": 3], image: image))
            #expect(failed.status == .error)
            #expect(failed.methodError?.contains("text") == true, "\(String(describing: failed.methodError)): \(failed.stderr)")
            #expect(!failed.crashed)
            #expect(try await runtimeCalls(vm, image) == 2, "the same runtime answered the next call")
        }
    }

    @Test(arguments: Backend.allCases)
    func aCrashMidCallIsAnErrorAndTheRuntimeRestarts(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let before = try await vm.exec(try Fixture.request("echo-serve", ["before": true], image: image))
            #expect(before.status == .ok, "\(before.stderr)")
            let crashed = try await vm.exec(try Fixture.request("echo-serve", ["crash": true], image: image))
            #expect(crashed.status == .error)
            #expect(crashed.exitCode == 128 + SIGABRT, "exit \(crashed.exitCode): \(crashed.stderr)")
            #expect(crashed.stderr.contains("ended during the call"), "\(crashed.stderr)")
            #expect(crashed.crashed, "a runtime that died mid-call is a crash")
            #expect(crashed.output.isEmpty)
            let after = try await vm.exec(try Fixture.request("echo-serve", ["after": true], image: image))
            #expect(after.status == .ok, "\(after.stderr)")
            #expect(try Fixture.output(of: after) == ["after": true])
        }
    }

    @Test(arguments: Backend.allCases)
    func aDeadlineKillsTheRuntimeAndTheNextCallGetsANewOne(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let hung = try await vm.exec(try Fixture.request("echo-serve", ["hang": true], deadlineMs: 300, image: image))
            #expect(hung.status == .timeout)
            #expect(hung.exitCode == 128 + SIGKILL)
            #expect(hung.execUs >= 300_000)
            // Ended by the agent at the deadline: a method that ran on would have been killed
            // with its VM by the host after its grace, which throws instead of answering.
            #expect(hung.stderr.contains("deadline of 300 ms expired"), "\(hung.stderr)")
            if backend == .process {
                // The sandbox's processes are visible from the host: the hung runtime is gone, and
                // the warm wordcount runtime went when echo-serve's first call came.
                #expect(childProcesses(of: backend.pid(of: vm)).isEmpty, "\(childProcesses(of: backend.pid(of: vm)))")
            }
            let after = try await vm.exec(try Fixture.request("echo-serve", ["after": true], image: image))
            #expect(after.status == .ok, "\(after.stderr)")
            if backend == .process {
                #expect(childProcesses(of: backend.pid(of: vm)).count == 1)
            }
        }
    }

    @Test(arguments: Backend.allCases)
    func nothingLeaksBetweenMethods(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            // An exec-mode method leaves a file and a daemon behind...
            let wrote = try await vm.exec(Fixture.shell("echo secret > leftover.txt && (setsid sleep 1000 > /dev/null 2>&1 &) && echo ok"))
            #expect(wrote.status == .ok, "\(wrote.stderr)")
            // ...a serve-mode method runs next: neither is there for it, nor afterwards.
            #expect(try await runtimeCalls(vm, image) == 1)
            #expect(try await runtimeCalls(vm, image) == 2)
            let echo = try await vm.exec(try Fixture.request("echo-serve", ["x": 1], image: image))
            #expect(echo.status == .ok)
            if backend == .process {
                let children = childProcesses(of: backend.pid(of: vm))
                #expect(children.count == 1 && children.allSatisfy { $0.contains("echo-sdk") }, "\(children)")
            }
            // wordcount's runtime went when echo-serve came: a new one counts from 1.
            #expect(try await runtimeCalls(vm, image) == 1)
            let after = try await vm.exec(Fixture.shell("ls -A /tmp; echo ---; ps -o comm | grep -c -e '^sleep' -e kiln-examples || true"))
            let parts = String(decoding: after.output, as: UTF8.self).components(separatedBy: "---\n")
            #expect(parts.first?.trimmingCharacters(in: .whitespacesAndNewlines) == "", "scratch: \(parts)")
            #expect(parts.last?.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "processes: \(parts)")
        }
    }

    @Test(arguments: Backend.allCases)
    func noopAnswersWithoutStartingAnything(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            #expect(try await runtimeCalls(vm, image) == 1)
            let noop = try await vm.exec(try Fixture.request("noop", image: image))
            #expect(noop.status == .ok)
            #expect(try MessagePackDecoder().decodeValue(from: noop.output) == ["output": .nil])
            // The builtin is not a method's code: the runtime is still there.
            #expect(try await runtimeCalls(vm, image) == 2)
            let unknown = try await vm.exec(GuestFrame.ExecRequest(id: "b", method: "b", entry: ["kiln:dance"], payload: [], deadlineMs: Fixture.generousDeadlineMs))
            #expect(unknown.status == .error && unknown.exitCode == 127 && unknown.stderr.contains("kiln:noop"))
        }
    }

    /// Calls wordcount and returns how many calls its runtime has served.
    private func runtimeCalls(_ vm: any MicroVM, _ image: GuestImage) async throws -> UInt64? {
        let result = try await vm.exec(try Fixture.request("wordcount", ["text": "one two\nthree"], image: image))
        #expect(result.status == .ok, "\(result.stderr)")
        let output = try Fixture.output(of: result)
        #expect(output?["words"] == 3 && output?["lines"] == 2)
        return output?["runtime_calls"]?.uint64Value
    }
}

/// The command lines of `pid`'s child processes (host view; the sandbox's PID namespace is a child
/// of the host's).
func childProcesses(of pid: Int32) -> [String] {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
    return pids.compactMap { candidate in
        guard let stat = try? String(contentsOfFile: "/proc/\(candidate)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 2, Int32(fields[1]) == pid, fields[0] != "Z" else { return nil }
        let cmdline = FileManager.default.contents(atPath: "/proc/\(candidate)/cmdline") ?? Data()
        return String(decoding: cmdline, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
    }
}
