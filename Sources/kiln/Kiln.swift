import ArgumentParser
import Foundation
import Logging

/// `kiln`: run the worker, submit invocations, follow results, manage pools and images.
@main
struct Kiln: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Run method invocations from RabbitMQ in pre-warmed micro-VMs.",
        subcommands: [WorkerCommand.self, Submit.self, Results.self, PoolCommand.self, ImageCommand.self, HistoryCommand.self, Explain.self, PredictCommand.self, Demo.self]
    )

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

/// Options every command that talks to the broker shares.
struct BrokerOptions: ParsableArguments {
    @Option(name: .customLong("amqp-url"), help: "The broker; KILN_AMQP_URL by default.")
    var url: String?

    @Option(help: "The topology's name prefix.")
    var prefix = "kiln"

    var resolvedURL: String {
        url ?? ProcessInfo.processInfo.environment["KILN_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/%2f"
    }
}
