import ArgumentParser
import Foundation
import KilnClient
import KilnWire
import Logging

/// `kiln submit METHOD --args JSON [--wait]`.
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish an invocation; with --wait, print its result.")

    @OptionGroup var broker: BrokerOptions

    @Argument(help: "The method, as named in the worker's manifest.")
    var method: String

    @Option(help: "The method's input as JSON (bytes as {\"$bin\": \"<base64>\"}).")
    var args = "null"

    @Option(help: "Deadline in milliseconds; the manifest's default otherwise.")
    var deadlineMs: UInt64?

    @Option(help: "Affinity key: invocations with the same key prefer the same VM.")
    var affinity: String?

    @Option(help: "The invocation id; a new UUID by default.")
    var id: String?

    @Flag(help: "Wait for the result and print it.")
    var wait = false

    @Option(help: "Seconds to wait for the result.")
    var timeout: Double = 60

    func validate() throws {
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be above 0 and at most 86400 seconds") }
    }

    func run() async throws {
        Kiln.bootstrapLogging()
        let (url, prefix) = try broker.endpoint()
        let client: KilnClient
        do {
            client = try await KilnClient.connect(url: url, prefix: prefix, connectionName: "kiln submit", logger: Logger(label: "kiln.submit"))
        } catch {
            throw CommandFailure(error.description)
        }
        let options = KilnClient.Options(deadlineMs: deadlineMs, affinity: affinity)
        let arguments: MessagePackValue
        do {
            arguments = try JSONBridge.value(fromJSON: args)
        } catch {
            await client.close()
            throw error
        }
        do {
            if wait {
                let pending = try await client.submit(method, args: arguments, options: options, id: id)
                print("submitted \(pending.id) (\(method))")
                print(ResultFormatter.detailed(try await pending.result(timeout: .milliseconds(Int64(timeout * 1_000)))))
            } else {
                print("submitted \(try await client.send(method, args: arguments, options: options, id: id)) (\(method))")
            }
            await client.close()
        } catch {
            await client.close()
            // A result that is not ok is printed in full, and the command fails.
            if let result = error.result {
                print(ResultFormatter.detailed(result))
                throw ExitCode(1)
            }
            if case .resultTimeout = error {
                throw CommandFailure("no result for \(id ?? "the invocation") within \(timeout) s: is a worker running?")
            }
            throw CommandFailure(error.description)
        }
    }
}
