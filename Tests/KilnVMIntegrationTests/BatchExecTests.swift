import Foundation
import KilnVM
import KilnWire
import Testing

/// `exec-batch` with real guests: the agent runs the calls in order and answers each as it ends,
/// wipes scratch between them, and ends the batch at a call that times out or crashes, answering
/// the calls after it `not_run`.
@Suite("Batched exec", .serialized)
struct BatchExecTests {
    /// The answers of one batch, in the order they came.
    actor Answers {
        private(set) var indices: [Int] = []
        private(set) var outcomes: [Result<GuestFrame.ExecResult, any Error>] = []

        func add(_ index: Int, _ outcome: Result<GuestFrame.ExecResult, any Error>) {
            indices.append(index)
            outcomes.append(outcome)
        }

        func results() throws -> [GuestFrame.ExecResult] { try outcomes.map { try $0.get() } }
    }

    static func batch(_ requests: [GuestFrame.ExecRequest], on vm: any MicroVM) async throws -> [GuestFrame.ExecResult] {
        let answers = Answers()
        await vm.execBatch(requests) { index, outcome in await answers.add(index, outcome) }
        #expect(await answers.indices == Array(requests.indices))
        return try await answers.results()
    }

    static func echo(_ index: Int, image: GuestImage, args: MessagePackValue? = nil) throws -> GuestFrame.ExecRequest {
        var request = try Fixture.request("echo-serve", args ?? ["i": .uint(UInt64(index))], image: image)
        request.resetAfter = true
        return request
    }

    @Test(arguments: Backend.allCases)
    func everyCallOfABatchGetsItsOwnResultInOrder(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let requests = try (0..<8).map { try Self.echo($0, image: image) }
            let results = try await Self.batch(requests, on: vm)
            #expect(results.map(\.id) == requests.map(\.id))
            for (index, result) in results.enumerated() {
                #expect(result.status == .ok, "call \(index): \(result.stderr)")
                #expect(try Fixture.output(of: result) == ["i": .uint(UInt64(index))])
                #expect(result.resetPending && !result.notRun)
            }
            // The runtime served all of them, and the VM serves single calls after the batch.
            let after = try await vm.exec(try Self.echo(99, image: image))
            #expect(try Fixture.output(of: after) == ["i": 99])
        }
    }

    /// Each call asks for `reset_after`: what the one before left in scratch is gone, be it a
    /// file, a hidden folder holding one, or nothing at all after a file made and removed (the
    /// agent skips the wipe of a folder whose size says it is empty).
    @Test(arguments: Backend.allCases)
    func scratchIsWipedBetweenTheCallsOfABatch(backend: Backend) async throws {
        try await withVM(backend) { vm in
            let check = #"if [ -n "$(ls -A)" ]; then r=dirty; else r=clean; fi; "#
            let answer = #"printf '\201\246output\245'$r"#
            let leaves = ["touch left-behind; ", "mkdir -p .hidden/deeper && touch .hidden/deeper/f; ",
                          "touch gone && rm gone; ", "mkdir .only; ", ""]
            let requests = leaves.map { Fixture.shell(check + $0 + answer, resetAfter: true) }
            let results = try await Self.batch(requests, on: vm)
            #expect(try results.map { try Fixture.output(of: $0) } == Array(repeating: "clean", count: leaves.count),
                    "\(results.map(\.stderr))")
        }
    }

    @Test(arguments: Backend.allCases)
    func aCrashEndsTheBatchAndTheCallsAfterItDoNotRun(backend: Backend) async throws {
        let image = try Fixture.image()
        try await withVM(backend) { vm in
            let requests = [try Self.echo(0, image: image), try Self.echo(1, image: image, args: ["crash": true]),
                            try Self.echo(2, image: image), try Self.echo(3, image: image)]
            let results = try await Self.batch(requests, on: vm)
            #expect(results[0].status == .ok)
            #expect(results[1].status == .error && results[1].crashed, "\(results[1])")
            #expect(results[2].notRun && results[3].notRun)
            #expect(results.map(\.id) == requests.map(\.id))
        }
    }

    @Test(arguments: Backend.allCases)
    func aTimeoutEndsTheBatchWithEachCallsOwnDeadline(backend: Backend) async throws {
        try await withVM(backend) { vm in
            let quick = Fixture.shell(#"printf '\201\246output\242ok'"#, resetAfter: true)
            // Its own deadline, short; the calls around it have generous ones.
            let stuck = Fixture.shell("sleep 30", deadlineMs: 300, resetAfter: true)
            let results = try await Self.batch([quick, stuck, Fixture.shell("true", resetAfter: true)], on: vm)
            #expect(results[0].status == .ok)
            #expect(results[1].status == .timeout)
            #expect(results[1].execUs < 30_000_000)
            #expect(results[2].notRun)
        }
    }

    /// A batch past the limit is refused as a whole, and the agent serves on.
    @Test
    func aBatchPastTheLimitIsRefused() async throws {
        try await withVM(.process) { vm in
            let calls = (0...GuestFrame.ExecBatch.maxCalls).map { _ in Fixture.shell("true") }
            let frame = try GuestFrame.execBatch(.init(calls: calls)).framed()
            guard case .error(let error) = try await Backend.process.raw(frame, to: vm) else {
                Issue.record("a batch of \(calls.count) calls was not refused")
                return
            }
            #expect(error.message.contains("at most \(GuestFrame.ExecBatch.maxCalls)"), "\(error.message)")
            let after = try await vm.exec(Fixture.shell(#"printf '\201\246output\242ok'"#))
            #expect(try Fixture.output(of: after) == "ok")
        }
    }
}
