import ArgumentParser
import Foundation
import KilnAMQP
import KilnWire
import Logging

/// `kiln results --follow [--method M] [--status S]`.
struct Results: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print results as workers publish them.")

    @OptionGroup var broker: BrokerOptions

    @Flag(help: "Keep following until interrupted (without it, stop after --count results).")
    var follow = false

    @Option(help: "Only this method's results.")
    var method: String?

    @Option(help: "Only results with this status: ok, error, timeout, rejected.")
    var status: String?

    @Option(help: "Stop after this many results (without --follow).")
    var count = 1

    @Flag(help: "Print each result as one JSON line.")
    var json = false

    func validate() throws {
        if let status, InvocationResult.Status(rawValue: status) == nil {
            throw ValidationError("--status must be ok, error, timeout or rejected")
        }
    }

    func run() async throws {
        Kiln.bootstrapLogging()
        let (endpoints, names) = try broker.endpoints(connectionName: "kiln results")
        let prefix = names.prefix
        let configuration = endpoints[0]
        let connection = AMQPConnection(endpoints: endpoints, logger: Logger(label: "kiln.results"))
        try await connection.connect()
        try await TopologyCheck.requireExchange(names.resultsExchange, on: connection, broker: configuration.redactedURL, prefix: prefix)
        let queue = "\(prefix).results-tap.\(UUID().uuidString.prefix(8).lowercased())"
        // A method name may itself hold dots: `#` matches them, the status is the last word.
        let key = "\(method ?? "#").\(status ?? "*")"
        try await connection.declare(AMQPTopology(
            queues: [.init(name: queue, durable: false, exclusive: true, autoDelete: true)],
            bindings: [.init(queue: queue, exchange: names.resultsExchange, routingKey: key)]))
        if !json { print(ResultFormatter.header) }
        var printed = 0
        for try await delivery in try await connection.consume(queue: queue, prefetch: 100) {
            try delivery.ack()
            do {
                let result = try MessagePackDecoder().decode(InvocationResult.self, from: delivery.body)
                if let method, result.method != method { continue }
                print(json ? ResultFormatter.jsonLine(result) : ResultFormatter.row(result))
            } catch {
                print("unreadable result on \(delivery.routingKey): \(error)")
            }
            printed += 1
            if !follow && printed >= count { break }
        }
        await connection.close(grace: .seconds(1))
    }
}

/// How results look on a terminal.
enum ResultFormatter {
    static let header = pad("id", 36) + " " + pad("method", 10) + " " + pad("status", 8) + " "
        + pad("vm", 12) + " " + pad("start", 5) + " " + lpad("exec ms", 9) + " " + lpad("total ms", 9) + " " + lpad("pred ms", 8)

    static func row(_ result: InvocationResult) -> String {
        let start = result.vm.map { $0.cold ? "cold" : "warm" } ?? "-"
        return pad(result.id, 36) + " " + pad(result.method, 10) + " " + pad(result.status.rawValue, 8) + " "
            + pad(result.vm?.id ?? "-", 12) + " " + pad(start, 5) + " " + lpad(ms(result.timing.exec), 9) + " "
            + lpad(ms(result.timing.total), 9) + " " + lpad(result.predictedUs.map(ms) ?? "-", 8)
    }

    static func detailed(_ result: InvocationResult) -> String {
        var lines = [
            "status:  \(result.status.rawValue) (attempt \(result.attempt), worker \(result.worker))",
            "output:  \(result.output.map { JSONBridge.text($0) } ?? "null")",
        ]
        if let error = result.error {
            lines.append("error:   \(error.kind): \(error.message)\(error.exitCode.map { " (exit \($0))" } ?? "")")
            if let stderr = error.stderr, !stderr.isEmpty { lines.append("stderr:  \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))") }
        }
        if let vm = result.vm {
            lines.append("vm:      \(vm.id) \(vm.backend)/\(vm.profile) \(vm.cold ? "cold" : "warm"), used \(vm.reuseCount) times before")
        }
        lines.append("timing:  exec \(ms(result.timing.exec)) ms, total \(ms(result.timing.total)) ms, provision \(ms(result.timing.provision)) ms"
            + (result.predictedUs.map { ", predicted \(ms($0)) ms" } ?? ""))
        return lines.joined(separator: "\n")
    }

    static func jsonLine(_ result: InvocationResult) -> String {
        guard let value = try? MessagePackDecoder().decodeValue(from: MessagePackEncoder().encode(result)) else { return "{}" }
        return JSONBridge.text(value)
    }

    static func ms(_ microseconds: UInt64) -> String {
        String(format: "%.2f", Double(microseconds) / 1_000)
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? String(text.prefix(width)) : text + String(repeating: " ", count: width - text.count)
    }

    static func lpad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
