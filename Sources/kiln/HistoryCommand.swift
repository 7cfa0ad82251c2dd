import ArgumentParser
import Foundation
import KilnPredict
import KilnWire

/// `kiln history export|import`: move a worker's execution history between hosts, so that a
/// new worker starts with a trained latency model.
struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Export and import the execution history.", subcommands: [Export.self, Import.self])

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case csv, msgpack
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write the history as CSV or MessagePack.")

        @OptionGroup var settings: ConfigurationOptions

        @Option(help: "The history database; history.path of the configuration by default.")
        var database: String?

        @Option(help: "csv or msgpack.")
        var format = Format.msgpack

        @Option(help: "Where to write; - for standard output.")
        var output = "-"

        func run() throws {
            let records = try ExecutionHistory(path: try settings.historyPath(database, mustExist: true)).all()
            let data: Data
            switch format {
            case .csv:
                data = Data(([ExecutionRecord.csvHeader] + records.map(\.csvLine)).joined(separator: "\n").utf8 + [0x0a])
            case .msgpack:
                data = Data(try MessagePackEncoder().encode(records))
            }
            if output == "-" {
                FileHandle.standardOutput.write(data)
            } else {
                try data.write(to: URL(fileURLWithPath: output))
                print("wrote \(records.count) records to \(output)")
            }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add records from a MessagePack export to a history.")

        @Argument(help: "A file written by `kiln history export --format msgpack` (or `kiln predict generate`).")
        var file: String

        @OptionGroup var settings: ConfigurationOptions

        @Option(help: "The history database to add to; history.path of the configuration by default.")
        var database: String?

        func run() throws {
            let records = try HistoryCommand.load(file)
            let path = try settings.historyPath(database, mustExist: false)
            try ExecutionHistory(path: path).append(records)
            print("imported \(records.count) records into \(path)")
        }
    }

    /// Records from a MessagePack file or a history database (by extension).
    static func load(_ path: String) throws -> [ExecutionRecord] {
        if path.hasSuffix(".sqlite") || path.hasSuffix(".db") { return try ExecutionHistory(path: path).all() }
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        return try MessagePackDecoder(limits: WireLimits(maxBodyBytes: 1 << 30, maxContainerLength: 10_000_000, maxTotalElements: 100_000_000))
            .decode([ExecutionRecord].self, from: bytes)
    }
}

/// `kiln explain ID`: how an invocation was placed, from the worker's history.
struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show how an invocation was placed: every candidate, scored.")

    @Argument(help: "The invocation id.")
    var id: String

    @OptionGroup var settings: ConfigurationOptions

    @Option(help: "The history database; history.path of the configuration by default.")
    var database: String?

    func run() throws {
        let path = try settings.historyPath(database, mustExist: true)
        let records = try ExecutionHistory(path: path).records(invocationID: id)
        guard !records.isEmpty else { throw CommandFailure("no invocation \(id.prefix(255)) in \(path)") }
        for record in records {
            print("invocation \(record.invocationID): \(record.method) on \(record.backend)/\(record.profile), \(record.warmth) VM used \(record.reuseCount) times")
            print(String(format: "  host: cpu %.0f%%, memory pressure %.2f, %d executing, %d queued", record.hostCPU * 100, record.memoryPressure,
                         record.concurrentExecutions, record.queueDepth))
            if !record.numericArgs.isEmpty { print("  args: \(record.numericArgs)") }
            print(String(format: "  predicted %.0f µs by %@; actual %.0f µs (provision %.0f + exec %.0f)",
                         record.predictedUs ?? 0, record.predictor ?? "?", record.provisionUs + record.execUs, record.provisionUs, record.execUs))
            print("  candidates, best first:")
            for line in (record.placement ?? "").split(separator: "\n") { print("    \(line)") }
        }
    }
}
