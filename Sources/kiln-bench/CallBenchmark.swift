import Foundation
import KilnVM
import KilnWire

/// Per-call cost on one VM, one call after another: the same echo in exec mode (a program started
/// per call) and in serve mode (a runtime that stays up), and the agent's `kiln:noop` builtin,
/// which starts nothing and so shows the platform's own overhead (the channel, the agent, the
/// host side). The noop row is that overhead, not a method: it is never compared with other
/// systems.
struct CallBenchmark {
    /// One row: what was called, its host round trips and the agent's own timing (`exec_us`).
    struct Row {
        var what: String
        var mode: String
        var host: [Double]
        var guest: [Double]
        /// Wall time of all measured calls, seconds.
        var elapsed: Double
        /// CPU time the VM's host process (QEMU with its guest, or the sandbox) spent per
        /// measured call, µs.
        var vmCPUPerCall: Double
    }

    let image: GuestImage
    /// Calls per serve-mode and noop row (after warm-up).
    let calls: Int
    /// Calls per exec-mode row (after warm-up): each starts a process, so fewer.
    let execCalls: Int

    /// How a row resets the VM after each call.
    enum Reset: Equatable {
        case none
        /// A `reset` frame of its own after the call.
        case roundTrip
        /// `reset_after` in the exec frame: the agent resets after answering.
        case afterAnswering
        /// `reset_after`, and calls sent in `exec-batch` frames of this many: one wake of the
        /// guest per batch. Host times are per call (the batch's time over its size).
        case batched(Int)
    }

    /// Measures every row on `vm`.
    func run(on vm: any MicroVM) async throws -> [Row] {
        guard let plain = image.manifest.guestEntry(for: "echo"), let sdk = image.manifest.guestEntry(for: "echo-serve") else {
            throw BenchError.missingMethod("echo and echo-serve")
        }
        guard image.manifest.methods["echo-serve"]?.mode == .serve else { throw BenchError.missingMethod("echo-serve in serve mode") }
        let noop = image.manifest.guestEntry(for: "noop") ?? ["kiln:noop"]
        let plans: [(what: String, mode: String, method: String, entry: [String], count: Int, reset: Reset)] = [
            ("echo (kiln-examples)", "exec", "echo", plain, execCalls, .none),
            // The SDK's echo in exec mode: the agent's table does not know this method name, so it
            // starts the program per call, and the SDK answers once.
            ("echo-sdk (KilnMethod)", "exec", "echo-sdk-exec", sdk, execCalls, .none),
            ("echo-sdk (KilnMethod)", "serve", "echo-serve", sdk, calls, .none),
            ("kiln:noop (platform overhead)", "builtin", "noop", noop, calls, .none),
            // Every call followed by the reset that readies the VM for the next: as its own round
            // trip, and as the pool does it, by the agent right after answering (`reset_after`).
            ("echo-sdk + reset keeping the runtime", "serve", "echo-serve", sdk, calls, .roundTrip),
            ("echo-sdk + reset_after (the pool's way)", "serve", "echo-serve", sdk, calls, .afterAnswering),
            ("kiln:noop + reset", "builtin", "noop", noop, calls, .roundTrip),
            ("kiln:noop + reset_after (the pool's way)", "builtin", "noop", noop, calls, .afterAnswering),
            // What a worker under load sends when invocations of one method wait for the same VM.
            ("echo-sdk + reset_after, batches of 4", "serve", "echo-serve", sdk, calls, .batched(4)),
            ("echo-sdk + reset_after, batches of 8", "serve", "echo-serve", sdk, calls, .batched(8)),
            ("kiln:noop + reset_after, batches of 8", "builtin", "noop", noop, calls, .batched(8)),
        ]
        var rows: [Row] = []
        for plan in plans {
            do {
                rows.append(try await measure(
                    vm, plan.what, plan.mode, method: plan.method, entry: plan.entry, count: plan.count, reset: plan.reset))
            } catch let error as BenchError {
                // An image whose programs differ from the examples' (a method that speaks only
                // serve mode): the other rows still count.
                FileHandle.standardError.write(Data("  skipped \(plan.what) \(plan.mode): \(error)\n".utf8))
            }
        }
        return rows
    }

    private func measure(
        _ vm: any MicroVM, _ what: String, _ mode: String, method: String, entry: [String], count: Int, reset: Reset
    ) async throws -> Row {
        let payload = try MessagePackEncoder().encode(["args": ["text": "ping", "n": 1]] as MessagePackValue)
        let clock = ContinuousClock()
        let size: Int
        if case .batched(let calls) = reset { size = calls } else { size = 1 }
        let warmUp = 20
        var host: [Double] = []
        var guest: [Double] = []
        var started = clock.now
        var cpuAtStart: UInt64 = 0
        var sent = 0
        var measuring = false
        while sent < count + warmUp {
            if sent >= warmUp && !measuring {
                measuring = true
                started = clock.now
                cpuAtStart = try await vm.stats().cpuTimeUs
            }
            let requests = (sent..<(sent + size)).map { round in
                GuestFrame.ExecRequest(
                    id: "\(method)-\(round)", method: method, entry: entry, payload: payload, deadlineMs: 5_000,
                    resetAfter: reset != .none && reset != .roundTrip)
            }
            let start = clock.now
            let results: [GuestFrame.ExecResult]
            if size == 1 {
                results = [try await vm.exec(requests[0])]
                if reset == .roundTrip { try await vm.reset(keepingServeRuntime: true) }
            } else {
                results = try await Self.batch(requests, on: vm)
            }
            let perCall = start.duration(to: clock.now).microseconds / Double(size)
            for result in results {
                guard result.status == .ok else { throw BenchError.callFailed(method, result.stderr) }
                if measuring {
                    host.append(perCall)
                    guest.append(Double(result.execUs))
                }
                sent += 1
            }
        }
        let cpu = try await vm.stats().cpuTimeUs
        return Row(what: what, mode: mode, host: host, guest: guest, elapsed: started.duration(to: clock.now).seconds,
                   vmCPUPerCall: Double(cpu &- cpuAtStart) / Double(max(1, host.count)))
    }

    /// One `exec-batch`, its results in order.
    private static func batch(_ requests: [GuestFrame.ExecRequest], on vm: any MicroVM) async throws -> [GuestFrame.ExecResult] {
        let collected = Collected()
        await vm.execBatch(requests) { _, outcome in await collected.add(outcome) }
        return try await collected.results(expected: requests.count)
    }

    private actor Collected {
        private var outcomes: [Result<GuestFrame.ExecResult, any Error>] = []

        func add(_ outcome: Result<GuestFrame.ExecResult, any Error>) { outcomes.append(outcome) }

        func results(expected: Int) throws -> [GuestFrame.ExecResult] {
            let results = try outcomes.map { try $0.get() }
            guard results.count == expected else { throw BenchError.callFailed("exec-batch", "\(results.count) of \(expected) answered") }
            return results
        }
    }
}

/// Why a benchmark could not run.
enum BenchError: Error, CustomStringConvertible {
    case missingMethod(String)
    case callFailed(String, String)

    var description: String {
        switch self {
        case .missingMethod(let what): return "the image has no \(what); build it from examples/methods.json (make image)"
        case .callFailed(let method, let stderr): return "\(method) failed: \(stderr)"
        }
    }
}

extension TextTable {
    /// A row of per-call figures: host p50/p99, the agent's p50/p99, calls per second.
    mutating func addCalls(_ backend: String, _ row: CallBenchmark.Row) {
        let host = Summary(row.host)
        let guest = Summary(row.guest)
        add(backend, row.what, row.mode, "\(host.count)", formatted(host.median), formatted(host.p99),
            formatted(guest.median), formatted(guest.p99), formatted(Double(host.count) / row.elapsed), formatted(row.vmCPUPerCall))
    }
}
