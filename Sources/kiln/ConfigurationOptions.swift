import ArgumentParser
import Foundation
import KilnAMQP
import KilnWorker

/// The worker's configuration, read by every command as the worker reads it: `--config` or
/// `KILN_CONFIG`, then `KILN_*` variables over it. A command's own flags win over both.
struct ConfigurationOptions: ParsableArguments {
    @Option(help: "The worker's configuration file (YAML); KILN_CONFIG by default, else built-in defaults. KILN_* variables override it.")
    var config: String?

    /// The configuration.
    func load() throws -> WorkerConfiguration {
        let environment = ProcessInfo.processInfo.environment
        do {
            return try WorkerConfiguration.load(file: file, environment: environment)
        } catch let error as ConfigurationError {
            throw CommandFailure(error.description)
        }
    }

    /// The history database: `given`, else the configuration's `history.path`; one that must
    /// exist already when it is to be read.
    func historyPath(_ given: String?, mustExist: Bool) throws -> String {
        let path = try given ?? load().history.path
        guard !path.isEmpty else { throw CommandFailure("the configuration keeps no history (history.path is empty): give --database") }
        if mustExist && !FileManager.default.fileExists(atPath: path) {
            throw CommandFailure("no history at \(path)\(given == nil ? " (history.path of \(file ?? "the default configuration"))" : "")")
        }
        return path
    }

    /// The file read: `--config`, else `KILN_CONFIG`.
    var file: String? { config ?? ProcessInfo.processInfo.environment["KILN_CONFIG"] }
}

/// Options every command that talks to the broker shares.
struct BrokerOptions: ParsableArguments {
    @OptionGroup var settings: ConfigurationOptions

    @Option(name: .customLong("amqp-url"), help: "The broker; amqp.url of the configuration (KILN_AMQP_URL) by default.")
    var url: String?

    @Option(help: "The topology's name prefix; amqp.prefix of the configuration (KILN_AMQP_PREFIX) by default.")
    var prefix: String?

    /// The broker URL and topology prefix: the flags, else the configuration's.
    func endpoint() throws -> (url: String, prefix: String) {
        let configuration = try settings.load()
        return (url ?? configuration.amqp.url, prefix ?? configuration.amqp.prefix)
    }

    /// The broker's nodes, each connection named `connectionName` (what the broker's management
    /// shows), and the topology's names.
    func endpoints(connectionName: String) throws -> (endpoints: [AMQPConfiguration], names: KilnNames) {
        let (url, prefix) = try endpoint()
        let endpoints = try AMQPConfiguration.endpoints(url).map { endpoint in
            var named = endpoint
            named.connectionName = connectionName
            return named
        }
        return (endpoints, KilnNames(prefix: prefix))
    }
}

/// A command that could not do its work (no usage is printed: the command line was fine).
struct CommandFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
