import Foundation
import KilnAMQP
import KilnWire
import Testing

/// Numbers no latency model should ever see, sent to a real worker (on the broker `make test`
/// starts) once its model is live for the methods: the worker answers every invocation, its
/// predictions stay finite and bounded, and a new worker on the same history serves every
/// method. Before the fix, float32 infinities reached the model, its weights became NaN, and
/// every worker replaying that history died on its first invocation. The workers run the
/// process sandbox: the model and the scorer are the same for every backend, and a few hundred
/// invocations under TCG beside the VM tests would only slow those down.
@Suite("Hostile numbers", .serialized)
struct HostileNumbersTests {
    func invocation(_ method: String, _ args: MessagePackValue, deadline: UInt64? = nil) -> Invocation {
        Invocation(id: "\(method)-\(UUID().uuidString.prefix(8).lowercased())", method: method, args: args, deadlineMs: deadline)
    }

    /// The worker's `/model` answer, decoded.
    struct ModelStatus: Decodable {
        struct Method: Decodable {
            var outcomes: Int
            var live: Bool
        }

        var model: String
        var rejected_updates: Int
        var methods: [String: Method]
    }

    func model(_ worker: WorkerProcess) async throws -> ModelStatus {
        try JSONDecoder().decode(ModelStatus.self, from: Data(try await worker.httpGet("/model").utf8))
    }

    @Test(.timeLimit(.minutes(6)))
    func nonFiniteAndAbsurdArgumentsNeitherCrashNorPoisonTheModel() async throws {
        let names = KilnNames(prefix: "hostile-\(UUID().uuidString.prefix(6).lowercased())")
        let client = try await TestClient(names: names)
        let worker = try WorkerProcess(names: names, environment: ["KILN_VM_BACKEND": "process"])
        try await worker.waitUntilReady()

        // Enough ordinary invocations that the model is live for both methods.
        var ordinary: [Invocation] = []
        // The longest each method took, ordinary and hostile calls alike: the most a sane model
        // can have learned it may take.
        var longestUs: [String: Double] = [:]
        func note(_ results: [String: InvocationResult], of items: [Invocation]) {
            for item in items {
                guard let result = results[item.id] else { continue }
                longestUs[item.method] = max(longestUs[item.method] ?? 0, Double(result.timing.exec))
            }
        }
        var round = 0
        while true {
            let methods = try await model(worker).methods
            if methods["echo"]?.live == true && methods["sleep"]?.live == true { break }
            var wave: [Invocation] = []
            for index in 0..<40 {
                let length = 10 + (round * 40 + index) % 400
                wave.append(invocation("echo", ["text": .string(String(repeating: "k", count: length))]))
                wave.append(invocation("sleep", ["ms": .uint(UInt64(1 + index % 20))]))
            }
            for item in wave { try await client.submit(item) }
            let (results, _) = try await client.collect(Set(wave.map(\.id)), timeout: .seconds(120))
            note(results, of: wave)
            ordinary += wave
            round += 1
            let status = try await worker.httpGet("/model")
            try #require(round <= 5, "the model is not live after \(ordinary.count) invocations: \(status)")
        }

        let hostileArgs: [MessagePackValue] = [
            ["ms": .float(.infinity)], ["ms": .float(-.infinity)], ["ms": .float(.nan)], ["ms": .double(.infinity)],
            ["ms": .double(.nan)], ["ms": .uint(1 << 63)], ["ms": .int(.min)], ["ms": .int(-5)], ["ms": .double(1e308)],
            ["ms": .array(Array(repeating: .float(.nan), count: 10_000))], ["text": .string(String(repeating: "z", count: 100_000))],
            .map([(key: .string("ms;=\n"), value: .float(.nan)), (key: "ms", value: 3)]),
        ]
        let hostile = hostileArgs.flatMap { [invocation("sleep", $0, deadline: 500), invocation("echo", $0, deadline: 2_000)] }
        for item in hostile { try await client.submit(item) }
        let (answered, _) = try await client.collect(Set(hostile.map(\.id)), timeout: .seconds(120))
        #expect(answered.count == hostile.count)
        note(answered, of: hostile)
        for item in hostile {
            let result = try #require(answered[item.id])
            let deadline = item.deadlineMs ?? 0
            // Finite, and never past the deadline plus the host's grace (5 s).
            #expect(result.predictedUs.map { $0 <= (deadline + 5_000) * 1_000 } == true,
                    "\(item.method) \(item.args): predicted \(String(describing: result.predictedUs)) µs")
            if item.method == "echo" { #expect(result.status == .ok, "\(item.args): \(String(describing: result.error))") }
        }

        // The model still predicts ordinary calls within what the method has been seen to take
        // (a poisoned one predicted a thousand times that), and refused nothing: the numbers
        // were dropped before they reached it. Not near each call's own time: on a loaded
        // machine one hostile call can take a second and teach the model so.
        let after = [invocation("echo", ["text": "after"]), invocation("sleep", ["ms": 10])]
        for item in after { try await client.submit(item) }
        let (afterResults, _) = try await client.collect(Set(after.map(\.id)), timeout: .seconds(60))
        for item in after {
            let result = try #require(afterResults[item.id])
            #expect(result.status == .ok)
            let predicted = Double(result.predictedUs ?? 0)
            let took = Double(result.timing.exec)
            let longest = max(longestUs[item.method] ?? 0, took)
            #expect(predicted > 0 && predicted < 10 * max(longest, 1_000),
                    "\(item.method): predicted \(predicted) µs, took \(took) µs, at most \(longest) µs before")
        }
        let state = try await model(worker)
        #expect(state.model == "ridge")
        #expect(state.rejected_updates == 0)
        #expect(try await worker.httpGet("/metrics").contains("kiln_model_rejected_updates_total{reason=\"non_finite_input\"} 0"))
        #expect(worker.stop() == 0, "\(worker.tail())")

        // A new worker on the same history replays all of it and serves every method.
        let next = try WorkerProcess(
            names: names, environment: ["KILN_HISTORY_PATH": worker.historyPath, "KILN_VM_BACKEND": "process"])
        try await next.waitUntilReady()
        let replayed = try await model(next)
        #expect(replayed.methods["echo"]?.live == true && replayed.methods["sleep"]?.live == true)
        #expect(next.logText.contains("skipped 0 of another feature schema and 0 with numbers that are not finite"), "\(next.tail())")
        let every = [
            invocation("echo", ["text": "again"]), invocation("sleep", ["ms": 5]), invocation("sha256", ["data": "abc"]),
            invocation("fail", ["message": "on purpose"]), invocation("wordcount", ["text": "a b"]),
            invocation("echo-serve", ["text": "served"]), invocation("noop", .nil), invocation("burn", ["ms": 5]),
        ]
        for item in every { try await client.submit(item) }
        let (served, _) = try await client.collect(Set(every.map(\.id)), timeout: .seconds(120))
        for item in every {
            let result = try #require(served[item.id])
            #expect(result.status == (item.method == "fail" ? .error : .ok), "\(item.method): \(String(describing: result.error))")
            #expect(result.predictedUs != nil)
        }
        #expect(next.stop() == 0)
        await client.close()
    }
}
