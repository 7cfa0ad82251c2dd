import Foundation
import KilnAMQP
import KilnClient
import KilnTestSupport
import KilnWire
import Logging
import Testing

/// The Swift producer client against a real worker (the process backend, for speed) on the
/// broker `make test` starts.
@Suite("Swift client", .serialized)
struct KilnClientTests {
    static let logger = Logger(label: "kiln-client-tests") { _ in SwiftLogNoOpLogHandler() }

    struct WordCount: Decodable, Equatable {
        var words: Int
        var lines: Int
    }

    struct Text: Encodable, Sendable {
        var text: String
    }

    @Test(.timeLimit(.minutes(4)))
    func callsMapsAndErrorsThroughARealWorker() async throws {
        let names = KilnNames(prefix: "swclient-\(UUID().uuidString.prefix(6).lowercased())")
        let tap = try await TestClient(names: names)  // declares the topology and reads kiln.results
        let worker = try WorkerProcess(names: names, environment: ["KILN_VM_BACKEND": "process"])
        try await worker.waitUntilReady()
        let kiln = try await KilnClient.connect(url: WorkerProcess.brokerURL, prefix: names.prefix, logger: Self.logger)

        // Codable in and out, and the raw result.
        let counted = try await kiln.invoke("wordcount", args: Text(text: "one two\nthree"), returning: WordCount.self, timeout: .seconds(60))
        #expect(counted == WordCount(words: 3, lines: 2))
        let echoed = try await kiln.invoke("echo", args: ["n": 3, "raw": .binary([1, 2])], timeout: .seconds(60))
        #expect(echoed.status == .ok && echoed.output == ["n": 3, "raw": .binary([1, 2])])
        #expect(echoed.vm?.backend == "process")

        // Results that are not ok are typed errors carrying them.
        await #expect { try await kiln.invoke("fail", args: ["message": "no"], timeout: .seconds(60)) } throws: { error in
            guard case KilnClientError.methodFailed(let result) = error else { return false }
            return result.error?.kind == "exit" && result.error?.exitCode == 3
        }
        await #expect { try await kiln.invoke("sleep", args: ["ms": 10_000], options: .init(deadlineMs: 300), timeout: .seconds(60)) } throws: { error in
            if case KilnClientError.methodTimedOut = error { return true }
            return false
        }
        await #expect { try await kiln.invoke("ecoh", timeout: .seconds(60)) } throws: { error in
            guard case KilnClientError.rejected(let result) = error else { return false }
            return result.error?.kind == "unknown_method"
        }
        await #expect { try await kiln.invoke("sleep", args: ["ms": 1_500], timeout: .milliseconds(100)) } throws: { error in
            if case KilnClientError.resultTimeout = error { return true }
            return false
        }

        // Many in flight, in order; a failure ends the sequence with its error.
        var outputs: [MessagePackValue] = []
        for try await output in kiln.map("echo-serve", (0..<200).map { ["i": MessagePackValue.uint(UInt64($0))] as MessagePackValue },
                                         returning: MessagePackValue.self, concurrency: 32, timeout: .seconds(60)) {
            outputs.append(output)
        }
        #expect(outputs == (0..<200).map { ["i": .uint(UInt64($0))] })
        var counts: [Int] = []
        do {
            let items: [MessagePackValue] = [["text": "a"], ["text": "a b"], ["words": 1], ["text": "x"]]
            for try await output in kiln.map("wordcount", items, returning: WordCount.self, concurrency: 2) { counts.append(output.words) }
            Issue.record("the failed item did not end the sequence")
        } catch KilnClientError.methodFailed(let result) {
            #expect(result.error?.kind == "method_error")
        }
        #expect(counts == [1, 2])

        // Fire and forget: the result reaches kiln.results.
        let sent = try await kiln.send("echo", args: ["fired": true])
        let (results, _) = try await tap.collect([sent], timeout: .seconds(60))
        #expect(results[sent]?.output == ["fired": true])

        // Nothing is sent for what cannot be.
        await #expect(throws: KilnClientError.self) { try await kiln.submit(String(repeating: "x", count: 65)) }

        // A connection the broker closes: awaited results fail at once (the client reconnects).
        // The sleep outlasts the two rabbitmqctl calls that close it, however slow the host.
        let pending = try await kiln.submit("sleep", args: ["ms": 20_000], options: .init(deadlineMs: 60_000))
        let listing = try BrokerAdmin.ctl(["list_connections", "pid", "client_properties", "--no-table-headers", "--quiet"])
        let ours = listing.split(separator: "\n").filter { $0.contains("kiln-client (swift)") }.map { String($0.split(separator: "\t")[0]) }
        #expect(!ours.isEmpty, "\(listing)")
        for pid in ours { try BrokerAdmin.ctl(["close_connection", pid, "closed by the test"]) }
        await #expect { try await pending.result(timeout: .seconds(60)) } throws: { error in
            if case KilnClientError.connectionLost = error { return true }
            return false
        }
        // …and serves the next call on the new connection.
        #expect(try await kiln.invoke("echo", args: ["again": true], timeout: .seconds(60)).output == ["again": true])

        await kiln.close()
        #expect(worker.stop() == 0)
        await tap.close()
    }

    @Test func aBrokerThatIsDownNoTopologyAndAnUnroutableMethodAreTold() async throws {
        await #expect { try await KilnClient.connect(url: "amqp://guest:secret@127.0.0.1:1/%2f", logger: Self.logger) } throws: { error in
            guard case KilnClientError.brokerUnavailable(let url, _) = error else { return false }
            return url.contains("127.0.0.1:1") && !url.contains("secret")
        }
        let missing = "nowhere-\(UUID().uuidString.prefix(6).lowercased())"
        await #expect { try await KilnClient.connect(url: WorkerProcess.brokerURL, prefix: missing, logger: Self.logger) } throws: { error in
            guard case KilnClientError.noTopology(_, let exchange) = error else { return false }
            return exchange == "\(missing).invoke"
        }
        // An exchange no queue is bound to: the broker returns the invocation.
        let unbound = KilnNames(prefix: "unbound-\(UUID().uuidString.prefix(6).lowercased())")
        let admin = AMQPConnection(configuration: try AMQPConfiguration(url: WorkerProcess.brokerURL), logger: Self.logger)
        try await admin.connect()
        try await admin.declare(AMQPTopology(exchanges: [.init(name: unbound.invokeExchange, type: .topic, durable: false, autoDelete: true)]))
        let kiln = try await KilnClient.connect(url: WorkerProcess.brokerURL, prefix: unbound.prefix, logger: Self.logger)
        await #expect { try await kiln.submit("echo") } throws: { error in
            guard case KilnClientError.unroutable(let method, _) = error else { return false }
            return method == "echo"
        }
        await kiln.close()
        try await admin.deleteExchange(unbound.invokeExchange)
        await admin.close(grace: .zero)
    }
}
