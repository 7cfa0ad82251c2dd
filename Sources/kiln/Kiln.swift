import ArgumentParser
@preconcurrency import Glibc
import Foundation
import KilnWorker
import Logging

/// `kiln`: run the worker, submit invocations, follow results, manage pools and images.
@main
struct Kiln: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Run method invocations from RabbitMQ in pre-warmed micro-VMs.",
        subcommands: [WorkerCommand.self, Submit.self, Results.self, PoolCommand.self, ImageCommand.self, MethodCommand.self,
                      HistoryCommand.self, Explain.self, UsageCommand.self, PredictCommand.self, FleetCommand.self, DashboardCommand.self, Demo.self]
    )

    /// Parses the command line and runs the command, after a warning for each `KILN_*` variable
    /// that sets nothing (a typo would otherwise leave a default in place unseen). Standard output
    /// is written a line at a time, also into a file or a pipe: `kiln results --follow > file`
    /// ended by a signal keeps every line it printed.
    static func main() async {
        setvbuf(stdout, nil, _IOLBF, 0)
        for warning in WorkerConfiguration.environmentWarnings(ProcessInfo.processInfo.environment) {
            FileHandle.standardError.write(Data("kiln: warning: \(warning)\n".utf8))
        }
        do {
            var command = try parseAsRoot()
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    /// Sends logs to stderr at KILN_LOG_LEVEL (`warning` unless a command asks for more).
    static func bootstrapLogging(defaultLevel: Logger.Level = .warning) {
        let level = ProcessInfo.processInfo.environment["KILN_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? defaultLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
