import Foundation
import KilnAMQP
import KilnWire
import Logging

/// Calls Kiln methods from Swift without writing AMQP: invocations published to
/// `<prefix>.invoke` with publisher confirms, results read through RabbitMQ's direct reply-to
/// (`amq.rabbitmq.reply-to`: no queue per call or per client).
///
/// ```swift
/// let kiln = try await KilnClient.connect(url: "amqp://guest:guest@127.0.0.1:5672/%2f", logger: logger)
/// let words = try await kiln.invoke("wordcount", args: ["text": "one two"], returning: WordCount.self)
/// for try await output in kiln.map("echo-serve", items, returning: MessagePackValue.self) { … }
/// await kiln.close()
/// ```
///
/// A result that is not `ok` throws ``KilnClientError`` (`methodFailed`, `methodTimedOut`,
/// `rejected`) carrying it; `resultTimeout` when none comes in time.
public final class KilnClient: Sendable {
    /// What an invocation carries beyond its method and args.
    public struct Options: Sendable {
        public var context: ExecutionContext?
        /// The deadline; the manifest's default when nil.
        public var deadlineMs: UInt64?
        /// Invocations with the same key prefer the same VM.
        public var affinity: String?
        public var resources: ResourceRequest?
        /// A W3C traceparent to carry along.
        public var traceparent: String?

        public init(context: ExecutionContext? = nil, deadlineMs: UInt64? = nil, affinity: String? = nil,
                    resources: ResourceRequest? = nil, traceparent: String? = nil) {
            self.context = context
            self.deadlineMs = deadlineMs
            self.affinity = affinity
            self.resources = resources
            self.traceparent = traceparent
        }
    }

    /// The direct reply-to pseudo-queue.
    static let replyQueue = "amq.rabbitmq.reply-to"

    public let names: KilnNames
    private let connection: AMQPConnection
    private let router: ResultRouter
    private let tasks: [Task<Void, Never>]
    private let redactedURL: String

    /// Connects to `url` (or any node of a cluster, its URLs separated by commas), checks that
    /// `prefix`'s topology is there and starts reading replies.
    public static func connect(url: String, prefix: String = "kiln", connectionName: String = "kiln-client (swift)",
                               logger: Logger) async throws(KilnClientError) -> KilnClient {
        var endpoints: [AMQPConfiguration]
        do {
            endpoints = try AMQPConfiguration.endpoints(url)
        } catch {
            throw .brokerUnavailable(url: url.split(separator: "@").last.map(String.init) ?? "?", reason: "\(error)")
        }
        for index in endpoints.indices { endpoints[index].connectionName = connectionName }
        let configuration = endpoints[0]
        let connection = AMQPConnection(endpoints: endpoints, publishWindow: 1_024, logger: logger)
        let names = KilnNames(prefix: prefix)
        do {
            try await connection.connect()
        } catch {
            throw .brokerUnavailable(url: configuration.redactedURL, reason: "\(error)")
        }
        do {
            try await connection.declare(AMQPTopology(exchanges: [.existing(names.invokeExchange)]))
        } catch AMQPError.channelClosed(404, _) {
            await connection.close(grace: .zero)
            throw .noTopology(url: configuration.redactedURL, exchange: names.invokeExchange)
        } catch {
            await connection.close(grace: .zero)
            throw .brokerUnavailable(url: configuration.redactedURL, reason: "\(error)")
        }
        let replies: AMQPConsumer
        do {
            replies = try await connection.consume(queue: replyQueue, prefetch: 0, automaticAcknowledgement: true)
        } catch {
            await connection.close(grace: .zero)
            throw .brokerUnavailable(url: configuration.redactedURL, reason: "cannot consume \(replyQueue): \(error)")
        }
        return KilnClient(connection: connection, names: names, replies: replies, redactedURL: configuration.redactedURL)
    }

    private init(connection: AMQPConnection, names: KilnNames, replies: AMQPConsumer, redactedURL: String) {
        self.connection = connection
        self.names = names
        self.redactedURL = redactedURL
        let router = ResultRouter()
        self.router = router
        let decoder = MessagePackDecoder()
        let reading = Task {
            do {
                for try await delivery in replies {
                    // A body that is not a result is nobody's: dropped.
                    if let result = try? decoder.decode(InvocationResult.self, from: delivery.body) { await router.deliver(result) }
                }
            } catch {}
            await router.failAll(KilnClientError.connectionLost("the connection to \(redactedURL) was closed"))
        }
        // Replies are addressed to one channel: when the connection is replaced, those awaited
        // are lost (the connection counts its reconnects; checked five times a second).
        let baseline = connection.connectionCount
        let watching = Task { [connection] in
            var seen = baseline
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                let now = connection.connectionCount
                if now != seen {
                    seen = now
                    await router.failAll(KilnClientError.connectionLost(
                        "the connection to \(redactedURL) was lost and replaced; results awaited from before will not come back here"))
                }
            }
        }
        tasks = [reading, watching]
    }

    // MARK: Calling

    /// Runs `method` with `args` and returns its `ok` result. The result is awaited while the
    /// broker's confirm of the invocation is (a caller that waits for the result need not wait
    /// for the confirm first); a refused or returned invocation still fails the call.
    public func invoke(_ method: String, args: MessagePackValue = .nil, options: Options = Options(),
                      timeout: Duration? = nil) async throws(KilnClientError) -> InvocationResult {
        let id = UUID().uuidString.lowercased()
        let body = try Self.body(id: id, method: method, args: args, options: options)
        await router.expect(id)
        let router = router
        let publishing = Task {
            do {
                try await self.publish(method: method, body: body, id: id, awaitingReply: true)
            } catch {
                // The result never comes: the waiter gets the reason instead.
                await router.forget(id, error: error)
                throw error
            }
        }
        let result = try await PendingResult(id: id, method: method, router: router).result(timeout: timeout)
        do {
            try await publishing.value
        } catch let error as KilnClientError {
            throw error
        } catch {
            throw .connectionLost("publishing to \(redactedURL) failed: \(error)")
        }
        return result
    }

    /// Runs `method` with `args` (anything `Encodable`) and returns its output as `Output`.
    public func invoke<Args: Encodable, Output: Decodable>(
        _ method: String, args: Args, returning _: Output.Type, options: Options = Options(), timeout: Duration? = nil
    ) async throws(KilnClientError) -> Output {
        try await invoke(method, args: Self.value(of: args), options: options, timeout: timeout).output(as: Output.self)
    }

    /// Publishes an invocation (with `id`, else a new UUID) and returns once the broker has
    /// taken it.
    public func submit(_ method: String, args: MessagePackValue = .nil, options: Options = Options(), id: String? = nil)
        async throws(KilnClientError) -> PendingResult
    {
        let id = id ?? UUID().uuidString.lowercased()
        let body = try Self.body(id: id, method: method, args: args, options: options)
        await router.expect(id)
        do {
            try await publish(method: method, body: body, id: id, awaitingReply: true)
        } catch {
            await router.forget(id)
            throw error
        }
        return PendingResult(id: id, method: method, router: router)
    }

    /// Runs `method` once per item (its args), at most `concurrency` at a time, and yields the
    /// outputs in the items' order, decoded as `Output`. `timeout` bounds each result from its
    /// submit; the first failure ends the sequence with its error.
    public func map<Args: Encodable & Sendable, Output: Decodable & Sendable>(
        _ method: String, _ items: some Sequence<Args> & Sendable, returning _: Output.Type, concurrency: Int = 64,
        timeout: Duration? = nil
    ) -> AsyncThrowingStream<Output, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Output, any Error>.makeStream()
        let task = Task {
            var window: [PendingResult] = []
            var iterator = items.makeIterator()
            var exhausted = false
            do {
                while true {
                    while !exhausted && window.count < max(1, concurrency) {
                        guard let item = iterator.next() else {
                            exhausted = true
                            break
                        }
                        window.append(try await submit(method, args: Self.value(of: item)))
                    }
                    guard !window.isEmpty else { break }
                    let pending = window.removeFirst()
                    let remaining = timeout.map { $0 - pending.submitted.duration(to: .now) }
                    continuation.yield(try await pending.result(timeout: remaining.map { max($0, .zero) }).output(as: Output.self))
                }
                continuation.finish()
            } catch {
                for pending in window { await router.forget(pending.id) }
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Publishes an invocation whose result goes to `kiln.results` only; returns its id.
    @discardableResult
    public func send(_ method: String, args: MessagePackValue = .nil, options: Options = Options(), id: String? = nil)
        async throws(KilnClientError) -> String
    {
        let id = id ?? UUID().uuidString.lowercased()
        try await publish(method: method, body: try Self.body(id: id, method: method, args: args, options: options), id: id, awaitingReply: false)
        return id
    }

    /// Closes the connection; results still awaited fail with `connectionLost`.
    public func close() async {
        for task in tasks { task.cancel() }
        await connection.close(grace: .seconds(1))
        await router.failAll(KilnClientError.connectionLost("the client was closed"))
    }

    // MARK: Wire

    private func publish(method: String, body: [UInt8], id: String, awaitingReply: Bool) async throws(KilnClientError) {
        do {
            try await connection.publish(AMQPMessage(
                exchange: names.invokeExchange, routingKey: method, body: body,
                properties: .msgpack(messageID: id, correlationID: id, replyTo: awaitingReply ? Self.replyQueue : nil), mandatory: true))
        } catch AMQPError.unroutable {
            throw .unroutable(method: method, exchange: names.invokeExchange)
        } catch AMQPError.invalidMessage(let reason) {
            throw .invalidInvocation(reason)
        } catch {
            throw .connectionLost("publishing to \(redactedURL) failed: \(error)")
        }
    }

    static func body(id: String, method: String, args: MessagePackValue, options: Options) throws(KilnClientError) -> [UInt8] {
        guard !id.isEmpty, id.utf8.count <= Invocation.maxIDBytes, !id.contains(where: \.isNewline) else {
            throw .invalidInvocation("an invocation id must be 1–\(Invocation.maxIDBytes) bytes without line breaks")
        }
        guard Invocation.isMethodName(method) else {
            throw .invalidInvocation("method must be 1–\(Invocation.maxMethodBytes) letters, digits, '-', '_' or '.', not '\(method.prefix(80))'")
        }
        if let deadline = options.deadlineMs, deadline == 0 { throw .invalidInvocation("deadline_ms must be positive") }
        let invocation = Invocation(
            id: id, method: method, args: args, context: options.context, deadlineMs: options.deadlineMs, resources: options.resources,
            affinity: options.affinity.map { Affinity(key: $0) }, trace: options.traceparent.map { TraceContext(traceparent: $0) },
            submittedAtUs: UInt64(Date().timeIntervalSince1970 * 1_000_000))
        do {
            return try MessagePackEncoder().encode(invocation)
        } catch {
            throw .invalidInvocation("\(error)")
        }
    }

    static func value<Args: Encodable>(of args: Args) throws(KilnClientError) -> MessagePackValue {
        if let value = args as? MessagePackValue { return value }
        do {
            return try MessagePackDecoder().decodeValue(from: MessagePackEncoder().encode(args))
        } catch {
            throw .invalidInvocation("args cannot be sent as MessagePack: \(error)")
        }
    }
}

/// An invocation in flight.
public struct PendingResult: Sendable {
    public let id: String
    public let method: String
    /// When it was submitted.
    public let submitted: ContinuousClock.Instant
    let router: ResultRouter

    init(id: String, method: String, router: ResultRouter) {
        self.id = id
        self.method = method
        self.submitted = .now
        self.router = router
    }

    /// Its result once it came, when `ok`; waits up to `timeout` (nil: for ever).
    public func result(timeout: Duration? = nil) async throws(KilnClientError) -> InvocationResult {
        let (id, router) = (id, router)
        do {
            let result = try await withThrowingTaskGroup(of: InvocationResult?.self) { group in
                group.addTask { try await router.wait(for: id) }
                if let timeout {
                    group.addTask {
                        try await Task.sleep(for: timeout)
                        return nil
                    }
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let result = first else {
                    await router.forget(id)
                    throw KilnClientError.resultTimeout(id: id, after: timeout ?? .zero)
                }
                return result
            }
            return try result.checked()
        } catch let error as KilnClientError {
            throw error
        } catch {
            await router.forget(id)
            throw .connectionLost("waiting for \(id): \(error)")
        }
    }
}
