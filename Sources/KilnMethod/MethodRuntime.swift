import Glibc
import KilnWire

/// Runs a ``KilnMethod`` as a method program, in the mode the agent started it in.
public enum MethodRuntime {
    /// Exit code when the agent's frames cannot be read (the agent restarts the runtime).
    static let protocolExitCode: Int32 = 65
    /// Exit code of a failed exec-mode call.
    static let failureExitCode: Int32 = 1

    /// Serves calls until the agent closes stdin (serve mode), or answers the one request on
    /// stdin (exec mode); then exits.
    public static func run<Method: KilnMethod>(_ method: Method) async -> Never {
        switch MethodMode.current {
        case .serve: await serve(method)
        case .exec: await answerOnce(method)
        }
    }

    /// Serve mode: frames on stdin, answers on stdout. Whatever else writes to stdout (a `print`)
    /// is sent to stderr instead, so it cannot break the protocol.
    static func serve<Method: KilnMethod>(_ method: Method) async -> Never {
        let protocolOutput = dup(1)
        guard protocolOutput >= 0, dup2(2, 1) >= 0 else {
            fail("cannot set up stdout: \(String(cString: strerror(errno)))", exitCode: protocolExitCode)
        }
        var stream = FrameStream(input: 0, output: protocolOutput)
        let server = CallServer(method: method)
        while true {
            let body: [UInt8]
            do {
                guard let next = try stream.next() else { exit(0) }
                body = next
            } catch {
                fail("kiln-method: \(error)", exitCode: protocolExitCode)
            }
            do {
                try stream.send(try await server.answer(body))
            } catch {
                fail("kiln-method: \(error)", exitCode: protocolExitCode)
            }
        }
    }

    /// Exec mode: one `{args, context?}` on stdin, one `{output, context?}` on stdout.
    static func answerOnce<Method: KilnMethod>(_ method: Method) async -> Never {
        var input: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count > 0 {
                input.append(contentsOf: chunk[0..<count])
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        do {
            let answer = try await CallServer(method: method).answerRequest(input)
            try writeAll(1, answer)
            exit(0)
        } catch {
            fail("\(error)", exitCode: failureExitCode)
        }
    }

    private static func fail(_ message: String, exitCode: Int32) -> Never {
        let bytes = Array((message + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(exitCode)
    }
}

/// Decodes a call, runs the handler, encodes the answer. Pure logic: the unit tests drive it
/// without processes.
struct CallServer<Method: KilnMethod> {
    let method: Method
    let decoder = MessagePackDecoder()
    let encoder = MessagePackEncoder()

    /// The answer frame body to a serve-mode call frame body. A handler error, or `args` that are
    /// not the method's input, make an answer with `error`.
    /// - Throws: a ``WireError`` when the body is not a call at all (no id to answer to).
    func answer(_ body: [UInt8]) async throws(WireError) -> [UInt8] {
        let call = try decoder.decode(TypedCall<Method.Input>.self, from: body)
        var context = MethodContext(invocationID: call.id, deadline: .milliseconds(Int64(clamping: call.deadlineMs)),
                                    mode: .serve, execution: call.context)
        var answer = TypedAnswer<Method.Output>(id: call.id)
        do {
            let input = try call.args.get()
            answer.output = try await method.handle(input, context: &context)
            answer.context = context.execution
        } catch let error as WireError {
            answer.error = "args do not decode as \(Method.Input.self): \(error)"
        } catch {
            answer.error = "\(error)"
        }
        do {
            return try encoder.encode(answer)
        } catch {
            return try encoder.encode(TypedAnswer<Method.Output>(id: call.id, error: "cannot encode the output: \(error)"))
        }
    }

    /// The `{output, context?}` answer to an exec-mode request `{args, context?}`.
    /// - Throws: what the handler throws, or why the request or answer could not be coded.
    func answerRequest(_ input: [UInt8]) async throws -> [UInt8] {
        // No stdin at all is a call with nil args ({"args": nil}).
        let request = try decoder.decode(TypedRequest<Method.Input>.self, from: input.isEmpty ? [0x81, 0xa4] + Array("args".utf8) + [0xc0] : input)
        var context = MethodContext(
            invocationID: getenv("KILN_INVOCATION_ID").map { String(cString: $0) } ?? "",
            deadline: .milliseconds(Int64(getenv("KILN_DEADLINE_MS").flatMap { Int64(String(cString: $0)) } ?? 30_000)),
            mode: .exec, execution: request.context)
        let output = try await method.handle(request.args, context: &context)
        return try encoder.encode(TypedAnswer(output: output, context: context.execution))
    }
}
