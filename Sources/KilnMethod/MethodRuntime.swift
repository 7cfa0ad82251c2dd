import Glibc
import KilnWire

/// Runs a ``KilnMethod`` as a method program, in the mode the agent started it in.
public enum MethodRuntime {
    /// Exit code when the agent's frames cannot be read (the agent restarts the runtime).
    static let protocolExitCode: Int32 = 65
    /// Exit code of a failed exec-mode call.
    static let failureExitCode: Int32 = 1

    /// Runs `method` from a synchronous `main`: its calls are served by one task on Swift's global
    /// executor while the main thread waits, until the program exits.
    ///
    /// Prefer this to an `async` main. An `async` main whose task suspends hands the main thread to
    /// `dispatch_main`, which ends it with `pthread_exit`; in a static executable the unwinder then
    /// sorts every frame description of the binary first (~80 million instructions, ~20 ms
    /// natively and over 100 ms under TCG), a cost every exec-mode call would pay.
    public static func start<Method: KilnMethod>(_ method: Method) -> Never {
        Task.detached { await run(method) }
        while true { pause() }
    }

    /// Serves calls until the agent closes stdin (serve mode), or answers the one request on
    /// stdin (exec mode); then exits.
    /// In both modes the answers go to a private copy of stdout, and whatever else writes to
    /// stdout (a `print`) goes to stderr instead, so it cannot break them.
    static func run<Method: KilnMethod>(_ method: Method) async -> Never {
        let answers = dup(1)
        guard answers >= 0, dup2(2, 1) >= 0 else {
            fail("cannot set up stdout: \(String(cString: strerror(errno)))", exitCode: protocolExitCode)
        }
        switch MethodMode.current {
        case .serve: await serve(method, answers: answers)
        case .exec: await answerOnce(method, answers: answers)
        }
    }

    /// Serve mode: frames on stdin, answers on `answers`.
    static func serve<Method: KilnMethod>(_ method: Method, answers: Int32) async -> Never {
        var stream = FrameStream(input: 0, output: answers)
        let server = CallServer(method: method)
        do {
            try stream.send(ServeProtocol.readyBody)
        } catch {
            fail("kiln-method: \(error)", exitCode: protocolExitCode)
        }
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

    /// Exec mode: one `{args, context?}` on stdin, one `{output, context?}` on `answers`.
    static func answerOnce<Method: KilnMethod>(_ method: Method, answers: Int32) async -> Never {
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
            try writeAll(answers, answer)
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

/// Why `args` could not become the method's input.
private struct ArgsMismatch: Error {
    let detail: String
}

/// Decodes a call, runs the handler, encodes the answer. Pure logic: the unit tests drive it
/// without processes.
struct CallServer<Method: KilnMethod> {
    let method: Method
    let decoder = MessagePackDecoder()
    let encoder = MessagePackEncoder()

    /// The answer frame body to a serve-mode call frame body. A handler error, or `args` that are
    /// not the method's input, make an answer with `error`. Only `args` (and a context, when the
    /// call has one) are decoded, and only `output` is encoded: the envelope is read and written
    /// as bytes.
    /// - Throws: a ``WireError`` when the body is not a call at all (no id to answer to).
    func answer(_ body: [UInt8]) async throws(WireError) -> [UInt8] {
        let call = try ServeCallFields(body: body)
        var failure: String?
        var output: [UInt8] = [0xc0]
        var returned: [UInt8]?
        do {
            let execution = try call.context.map { try decoder.decode(ExecutionContext.self, from: Array($0)) }
            var context = MethodContext(invocationID: call.id, deadline: .milliseconds(Int64(clamping: call.deadlineMs)),
                                        mode: .serve, execution: execution)
            let input: Method.Input
            do {
                input = try decodeInput(Array(call.args))
            } catch {
                throw ArgsMismatch(detail: "\(error)")
            }
            output = try encodeOutput(try await method.handle(input, context: &context))
            returned = try context.execution.map { try encoder.encode($0) }
        } catch let mismatch as ArgsMismatch {
            failure = "args do not decode as \(Method.Input.self): \(mismatch.detail)"
        } catch {
            failure = "\(error)"
        }
        guard let failure else { return ServeAnswerBody.make(id: call.id, output: output, context: returned) }
        return try encoder.encode(MessagePackValue.map([(key: "id", value: .string(call.id)), (key: "error", value: .string(failure))]))
    }

    /// `args` as the method's input; a `MessagePackValue` input takes the decoder's value path.
    private func decodeInput(_ bytes: [UInt8]) throws -> Method.Input {
        if Method.Input.self == MessagePackValue.self {
            return try decoder.decodeValue(from: bytes) as! Method.Input
        }
        return try decoder.decode(Method.Input.self, from: bytes)
    }

    /// The method's output as MessagePack; a `MessagePackValue` output takes the encoder's value path.
    private func encodeOutput(_ output: Method.Output) throws -> [UInt8] {
        if let value = output as? MessagePackValue { return try encoder.encode(value) }
        return try encoder.encode(output)
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
