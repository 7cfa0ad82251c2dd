import KilnWire

/// What went wrong calling Kiln. A result that is not `ok` is an error that carries it.
public enum KilnClientError: Error, Sendable, CustomStringConvertible {
    /// The broker could not be reached or refused the connection (`url` without its password).
    case brokerUnavailable(url: String, reason: String)
    /// The broker has no `exchange`: no worker declared Kiln's topology with this prefix there.
    case noTopology(url: String, exchange: String)
    /// The broker returned the invocation: no queue takes `method`.
    case unroutable(method: String, exchange: String)
    /// The invocation cannot be sent (a name out of range, args MessagePack cannot carry);
    /// nothing was published.
    case invalidInvocation(String)
    /// No result for invocation `id` arrived within `after`. It may still run; its result then
    /// goes to `kiln.results` only.
    case resultTimeout(id: String, after: Duration)
    /// The connection was lost (or replaced) while results were awaited: the invocations still
    /// run (at least once) and their results reach `kiln.results`, but their replies to this
    /// client are lost with the connection they were addressed to.
    case connectionLost(String)
    /// The method failed (status `error`): `result.error` says how.
    case methodFailed(InvocationResult)
    /// The method ran past its deadline (status `timeout`).
    case methodTimedOut(InvocationResult)
    /// The worker did not run it (status `rejected`): an unknown method, no profile, a deadline
    /// out of range.
    case rejected(InvocationResult)
    /// The result is `ok` but its output is not what the caller asked to decode.
    case undecodableOutput(InvocationResult, String)

    /// The result this error carries, if any.
    public var result: InvocationResult? {
        switch self {
        case .methodFailed(let result), .methodTimedOut(let result), .rejected(let result), .undecodableOutput(let result, _):
            return result
        default:
            return nil
        }
    }

    public var description: String {
        switch self {
        case .brokerUnavailable(let url, let reason): return "cannot connect to \(url): \(reason)"
        case .noTopology(let url, let exchange):
            return "the broker at \(url) has no exchange \(exchange): no worker has declared Kiln's topology there "
                + "(start `kiln worker` with this prefix, or load deploy/rabbitmq/definitions.json)"
        case .unroutable(let method, let exchange): return "no queue takes method \(method) from \(exchange): the broker returned it"
        case .invalidInvocation(let reason): return "the invocation cannot be sent: \(reason)"
        case .resultTimeout(let id, let after): return "no result for \(id) within \(after)"
        case .connectionLost(let reason): return reason
        case .methodFailed(let result), .methodTimedOut(let result), .rejected(let result):
            let error = result.error
            return "\(result.method) \(result.status.rawValue): \(error?.kind ?? "?"): \(error?.message ?? "")"
        case .undecodableOutput(let result, let reason): return "the output of \(result.method) (\(result.id)) is not what was asked: \(reason)"
        }
    }
}

extension InvocationResult {
    /// Itself when `ok`; else the matching ``KilnClientError``, which carries it.
    public func checked() throws(KilnClientError) -> InvocationResult {
        switch status {
        case .ok: return self
        case .error: throw .methodFailed(self)
        case .timeout: throw .methodTimedOut(self)
        case .rejected: throw .rejected(self)
        }
    }

    /// The output decoded as `Output` (`nil` output decodes as MessagePack nil).
    public func output<Output: Decodable>(as _: Output.Type) throws(KilnClientError) -> Output {
        do {
            return try MessagePackDecoder().decode(Output.self, from: MessagePackEncoder().encode(output ?? .nil))
        } catch {
            throw .undecodableOutput(self, "\(error)")
        }
    }
}
