import Glibc
import KilnWire

/// A Kiln method written in Swift: Codable input and output, and an `async throws` handler that
/// may read and update the invocation's context. The SDK turns it into a method program that
/// speaks both of the agent's modes, so one binary serves a manifest entry with `"mode": "serve"`
/// (started once per VM, called many times) or `"mode": "exec"` (started for every call).
///
/// ```swift
/// import KilnMethod
///
/// @main
/// struct WordCount: KilnMethod {
///     struct Input: Decodable { var text: String }
///     struct Output: Encodable { var words: Int }
///
///     func handle(_ input: Input, context: inout MethodContext) async throws -> Output {
///         context.locals["seen"] = .uint((context.locals["seen"]?.uint64Value ?? 0) + 1)  // goes back
///         return Output(words: input.text.split(whereSeparator: \.isWhitespace).count)
///     }
/// }
/// ```
///
/// In serve mode `init()` runs once, when the agent starts the runtime: load what every call
/// needs there. A thrown error fails that call only (the result carries its description); the
/// runtime stays up. Anything the handler prints goes to stderr (stdout carries the frames), and
/// the last 4 KiB of it come back with a failed call.
public protocol KilnMethod: Sendable {
    /// What the method takes: the invocation's `args`.
    associatedtype Input: Decodable
    /// What the method returns: the result's `output`.
    associatedtype Output: Encodable

    /// Makes the method; in serve mode, once per runtime.
    init()

    /// Runs one call.
    /// - Parameters:
    ///   - input: the invocation's `args`, decoded.
    ///   - context: the invocation's context (locals and state) and facts about the call; what
    ///     the handler leaves in it goes back to the caller.
    /// - Returns: the result's `output`.
    func handle(_ input: Input, context: inout MethodContext) async throws -> Output
}

extension KilnMethod {
    /// The program's entry point with `@main`: serve mode when the agent started it so, else one
    /// call in exec mode. Synchronous on purpose: see ``MethodRuntime/start(_:)``.
    public static func main() {
        MethodRuntime.start(Self())
    }
}

/// The context of one call: the invocation's execution context, which the handler may change and
/// which goes back with the result, and what the call is.
public struct MethodContext: Sendable {
    /// The invocation's id.
    public let invocationID: String
    /// How long the call may take; the agent kills the runtime after that.
    public let deadline: Duration
    /// When the call arrived.
    public let startedAt: ContinuousClock.Instant
    /// How the program was started.
    public let mode: MethodMode
    /// Named values the caller keeps between invocations (the context's `locals`).
    public var locals: [String: MessagePackValue]
    /// Opaque bytes the caller keeps between invocations (the context's `state`).
    public var state: [UInt8]?

    /// The time left before the deadline.
    public var remaining: Duration {
        deadline - startedAt.duration(to: .now)
    }

    /// A context, as the SDK makes it for each call (public for tests of handlers).
    public init(invocationID: String, deadline: Duration, mode: MethodMode, execution: ExecutionContext? = nil) {
        self.invocationID = invocationID
        self.deadline = deadline
        self.startedAt = .now
        self.mode = mode
        self.locals = execution?.locals ?? [:]
        self.state = execution?.state
        self.arrivedWithContext = execution != nil
    }

    private let arrivedWithContext: Bool

    /// The context to send back: nil when the invocation had none and the handler set nothing.
    var execution: ExecutionContext? {
        guard arrivedWithContext || !locals.isEmpty || state != nil else { return nil }
        return ExecutionContext(locals: locals, state: state)
    }
}

/// How a method program was started.
public enum MethodMode: String, Sendable {
    /// Once per call: the request on stdin, the answer on stdout.
    case exec
    /// Once per VM: calls arrive as frames on stdin, answers leave as frames on stdout.
    case serve

    /// The mode the agent started this process in (``ServeProtocol/modeVariable``).
    public static var current: MethodMode {
        guard let value = getenv(ServeProtocol.modeVariable) else { return .exec }
        return String(cString: value) == "serve" ? .serve : .exec
    }
}
