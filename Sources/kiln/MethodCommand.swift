import ArgumentParser
import Foundation
import KilnWire

/// `kiln method run PROGRAM --args JSON`: one call of a method program on this host, as the guest
/// agent makes it in exec mode (`{args, context}` as MessagePack on stdin, `{output, context?}`
/// on stdout), with JSON on both ends, for trying a method before building an image with it.
struct MethodCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "method", abstract: "Try a method program on this host.", subcommands: [Run.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Call a method program once, as the agent does in exec mode, and print its output as JSON.",
            discussion: "The program reads the MessagePack map {args, context} on stdin and writes {output, context?} on stdout; "
                + "this command makes and reads those from JSON (bytes as {\"$bin\": \"<base64>\"}). No VM, no isolation: for trying your own code.")

        @Argument(help: "The method program, e.g. .build/debug/greet.")
        var program: String

        @Argument(parsing: .postTerminator, help: "After --, arguments for the program (the manifest entry's after its first).")
        var arguments: [String] = []

        @Option(help: "The call's args as JSON.")
        var args = "null"

        @Option(help: "The call's context as JSON, e.g. {\"locals\": {\"n\": 1}}.")
        var context: String?

        @Option(help: "Seconds before the program is killed.")
        var timeout: Double = 60

        func validate() throws {
            guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be above 0 and at most 86400 seconds") }
        }

        func run() async throws {
            var request: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "args", value: try JSONBridge.value(fromJSON: args))]
            if let context { request.append((key: "context", value: try JSONBridge.value(fromJSON: context))) }
            let stdin = try MessagePackEncoder().encode(MessagePackValue.map(request))

            let process = Process()
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = arguments
            var environment = ProcessInfo.processInfo.environment
            environment["KILN_MODE"] = nil  // exec mode
            environment["KILN_METHOD"] = URL(fileURLWithPath: program).lastPathComponent
            environment["KILN_INVOCATION_ID"] = "local-\(UUID().uuidString.prefix(8).lowercased())"
            environment["KILN_DEADLINE_MS"] = String(Int(timeout * 1_000))
            process.environment = environment
            let input = Pipe(), output = Pipe(), errors = Pipe()
            (process.standardInput, process.standardOutput, process.standardError) = (input, output, errors)
            do {
                try process.run()
            } catch {
                throw CommandFailure("cannot start \(program): \(error.localizedDescription)")
            }
            let killer = Task {
                try await Task.sleep(for: .seconds(timeout))
                kill(process.processIdentifier, SIGKILL)
            }
            // Read both ends while writing, so that a program that answers before reading all
            // of its input (or writes a lot to stderr) cannot stall the call.
            async let stdoutData = Task.detached { output.fileHandleForReading.readDataToEndOfFile() }.value
            async let stderrData = Task.detached { errors.fileHandleForReading.readDataToEndOfFile() }.value
            try? input.fileHandleForWriting.write(contentsOf: Data(stdin))
            try? input.fileHandleForWriting.close()
            let (stdout, stderrText) = await (stdoutData, String(decoding: stderrData, as: UTF8.self))
            process.waitUntilExit()
            killer.cancel()

            if !stderrText.isEmpty { FileHandle.standardError.write(Data(stderrText.utf8)) }
            if process.terminationReason == .uncaughtSignal {
                throw CommandFailure("\(program) was killed by signal \(process.terminationStatus)"
                    + (process.terminationStatus == SIGKILL ? " (after --timeout \(timeout) s?)" : ""))
            }
            guard process.terminationStatus == 0 else {
                throw CommandFailure("\(program) exited with code \(process.terminationStatus): the call failed (its stderr is above)")
            }
            let answer = try? MessagePackDecoder().decodeValue(from: [UInt8](stdout))
            guard case .map = answer, let answer else {
                throw CommandFailure("\(program) exited 0 but its stdout is not the MessagePack map {output, context?}")
            }
            print("output:  \(JSONBridge.text(answer["output"] ?? MessagePackValue.nil))")
            if let context = answer["context"], context != .nil { print("context: \(JSONBridge.text(context))") }
        }
    }
}
