import CRabbitMQ
import Foundation

/// One rabbitmq-c connection with one channel: the blocking calls, each bounded, each failure
/// mapped to an ``AMQPError``. Not thread-safe: it belongs to the thread of a ``ConnectionLoop``.
final class RabbitMQSession {
    let state: amqp_connection_state_t
    let channel: amqp_channel_t = 1
    /// The socket, for `poll`.
    let descriptor: Int32

    /// Opens the connection, logs in and opens the channel.
    init(configuration: AMQPConfiguration) throws(AMQPError) {
        guard let state = amqp_new_connection() else { throw .protocolError("amqp_new_connection failed") }
        let descriptor: Int32
        do {
            descriptor = try Self.open(state, configuration)
            try Self.login(state, configuration)
            amqp_channel_open(state, 1)
            try Self.check(amqp_get_rpc_reply(state), "channel.open", state: state)
        } catch {
            // Nothing is stored yet, so `deinit` will not run: the state is freed here, once.
            amqp_destroy_connection(state)
            throw error
        }
        self.state = state
        self.descriptor = descriptor
    }

    deinit {
        amqp_destroy_connection(state)
    }

    private static func open(_ state: amqp_connection_state_t, _ configuration: AMQPConfiguration) throws(AMQPError) -> Int32 {
        let socket: OpaquePointer?
        if let tls = configuration.tls {
            socket = amqp_ssl_socket_new(state)
            guard let socket else { throw .tlsConfiguration("rabbitmq-c could not create an SSL socket") }
            amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
            amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
            if let caFile = tls.caFile {
                guard FileManager.default.isReadableFile(atPath: caFile),
                      amqp_ssl_socket_set_cacert(socket, caFile) == AMQP_STATUS_OK.rawValue else {
                    throw .tlsConfiguration("cannot read the CA file \(caFile)")
                }
            }
            if let certificate = tls.certificateFile {
                guard let key = tls.keyFile else { throw .tlsConfiguration("certfile needs keyfile too") }
                guard amqp_ssl_socket_set_key(socket, certificate, key) == AMQP_STATUS_OK.rawValue else {
                    throw .tlsConfiguration("cannot load the client certificate \(certificate) with key \(key)")
                }
            }
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else { throw .protocolError("rabbitmq-c could not create a socket") }
        var connectTimeout = timeval(configuration.connectTimeout)
        let status = amqp_socket_open_noblock(socket, configuration.host, Int32(configuration.port), &connectTimeout)
        guard status == AMQP_STATUS_OK.rawValue else {
            throw .connectFailed(host: configuration.host, port: configuration.port, reason: errorString(status))
        }
        var handshake = timeval(configuration.handshakeTimeout)
        var rpc = timeval(configuration.rpcTimeout)
        _ = amqp_set_handshake_timeout(state, &handshake)
        _ = amqp_set_rpc_timeout(state, &rpc)
        let descriptor = amqp_get_sockfd(state)
        // A send to a hung broker must not block the thread past the RPC bound either.
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &rpc, socklen_t(MemoryLayout<timeval>.size))
        return descriptor
    }

    private static func login(_ state: amqp_connection_state_t, _ configuration: AMQPConfiguration) throws(AMQPError) {
        let arena = CArena()
        var properties = arena.table([
            "connection_name": .string(configuration.connectionName),
            "product": "kiln",
            "platform": "Swift",
        ])
        let heartbeat = Int32(clamping: configuration.heartbeat.components.seconds)
        let reply = kiln_amqp_login_plain(
            state, configuration.virtualHost, 0, Int32(configuration.frameMax), heartbeat, &properties,
            configuration.user, configuration.password)
        if reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION, let reason = loginFailure(reply.library_error, tls: configuration.tls != nil) {
            throw .connectFailed(host: configuration.host, port: configuration.port, reason: reason)
        }
        try check(reply, "login", state: state)
    }

    /// What a connection that ended during login most likely means, when the library's words
    /// ("a SSL error occurred") would not tell an operator.
    private static func loginFailure(_ status: Int32, tls: Bool) -> String? {
        let library = errorString(status)
        let ended = [AMQP_STATUS_SSL_ERROR.rawValue, AMQP_STATUS_SSL_CONNECTION_FAILED.rawValue, AMQP_STATUS_CONNECTION_CLOSED.rawValue,
                     AMQP_STATUS_SOCKET_ERROR.rawValue].contains(status)
        guard ended else { return nil }
        return tls
            ? "the broker ended the TLS connection at login: it refused the client certificate (expired, or not signed by a CA it trusts?) (\(library))"
            : "the broker ended the connection at login: a TLS port needs an amqps:// URL (\(library))"
    }

    /// Throws the error a reply carries, if any.
    static func check(_ reply: amqp_rpc_reply_t, _ operation: String, state: amqp_connection_state_t) throws(AMQPError) {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            throw serverError(reply.reply, state: state, channel: 1)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            throw libraryError(reply.library_error, operation: operation)
        default:
            throw .protocolError("\(operation): no reply")
        }
    }

    /// The error a broker's close method carries, after answering it with close-ok as the
    /// protocol asks.
    static func serverError(_ method: amqp_method_t, state: amqp_connection_state_t, channel: amqp_channel_t) -> AMQPError {
        switch method.id {
        case KILN_AMQP_CONNECTION_CLOSE:
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t()
            _ = amqp_send_method(state, 0, KILN_AMQP_CONNECTION_CLOSE_OK, &ok)
            let text = close.reply_text.string
            return close.reply_code == 403 || close.reply_code == 530
                ? .accessRefused("\(close.reply_code) \(text)")
                : .connectionClosed(code: close.reply_code, text: text)
        case KILN_AMQP_CHANNEL_CLOSE:
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            var ok = amqp_channel_close_ok_t()
            _ = amqp_send_method(state, channel, KILN_AMQP_CHANNEL_CLOSE_OK, &ok)
            return .channelClosed(code: close.reply_code, text: close.reply_text.string)
        default:
            return .protocolError(String(format: "unexpected method 0x%08x from the broker", method.id))
        }
    }

    /// The error for a rabbitmq-c status code.
    static func libraryError(_ status: Int32, operation: String) -> AMQPError {
        switch status {
        case AMQP_STATUS_TIMEOUT.rawValue: return .timeout(operation: operation)
        case AMQP_STATUS_HEARTBEAT_TIMEOUT.rawValue: return .heartbeatTimeout
        default: return .connectionLost("\(operation): \(errorString(status))")
        }
    }

    static func errorString(_ status: Int32) -> String {
        String(cString: amqp_error_string2(status))
    }

    // MARK: Channel operations

    func check(_ operation: String) throws(AMQPError) {
        try Self.check(amqp_get_rpc_reply(state), operation, state: state)
    }

    func reopenChannel() throws(AMQPError) {
        amqp_channel_open(state, channel)
        try check("channel.open")
    }

    func enableConfirms() throws(AMQPError) {
        amqp_confirm_select(state, channel)
        try check("confirm.select")
    }

    func qos(prefetch: UInt16) throws(AMQPError) {
        amqp_basic_qos(state, channel, 0, prefetch, 0)
        try check("basic.qos")
    }

    /// Starts consuming `queue`; returns the consumer tag.
    func consume(queue: String, automaticAcknowledgement: Bool = false, arguments: [String: AMQPFieldValue] = [:]) throws(AMQPError) -> String {
        let arena = CArena()
        let ok = amqp_basic_consume(state, channel, arena.bytes(queue), amqp_empty_bytes, 0, automaticAcknowledgement ? 1 : 0, 0,
                                    arena.table(arguments))
        try check("basic.consume on \(queue)")
        return ok?.pointee.consumer_tag.string ?? ""
    }

    func cancel(consumerTag: String) throws(AMQPError) {
        let arena = CArena()
        amqp_basic_cancel(state, channel, arena.bytes(consumerTag))
        try check("basic.cancel")
    }

    func declare(_ exchange: AMQPTopology.Exchange) throws(AMQPError) {
        let arena = CArena()
        amqp_exchange_declare(
            state, channel, arena.bytes(exchange.name), arena.bytes(exchange.type.rawValue), exchange.passive ? 1 : 0,
            exchange.durable ? 1 : 0, exchange.autoDelete ? 1 : 0, 0, arena.table(exchange.arguments))
        try check("exchange.declare \(exchange.name)")
    }

    /// Declares `queue`; returns its name (the broker's, for a server-named queue).
    func declare(_ queue: AMQPTopology.Queue) throws(AMQPError) -> String {
        let arena = CArena()
        let ok = amqp_queue_declare(
            state, channel, arena.bytes(queue.name), 0, queue.durable ? 1 : 0, queue.exclusive ? 1 : 0,
            queue.autoDelete ? 1 : 0, arena.table(queue.arguments))
        try check("queue.declare \(queue.name)")
        return ok?.pointee.queue.string ?? queue.name
    }

    func declare(_ binding: AMQPTopology.Binding) throws(AMQPError) {
        let arena = CArena()
        amqp_queue_bind(
            state, channel, arena.bytes(binding.queue), arena.bytes(binding.exchange), arena.bytes(binding.routingKey),
            arena.table(binding.arguments))
        try check("queue.bind \(binding.queue) to \(binding.exchange)")
    }

    func deleteQueue(_ name: String) throws(AMQPError) {
        let arena = CArena()
        amqp_queue_delete(state, channel, arena.bytes(name), 0, 0)
        try check("queue.delete \(name)")
    }

    func unbind(_ binding: AMQPTopology.Binding) throws(AMQPError) {
        let arena = CArena()
        amqp_queue_unbind(
            state, channel, arena.bytes(binding.queue), arena.bytes(binding.exchange), arena.bytes(binding.routingKey),
            arena.table(binding.arguments))
        try check("queue.unbind \(binding.queue) from \(binding.exchange)")
    }

    func inspectQueue(_ name: String) throws(AMQPError) -> AMQPQueueState {
        let arena = CArena()
        let ok = amqp_queue_declare(state, channel, arena.bytes(name), 1, 0, 0, 0, amqp_empty_table)
        try check("queue.declare (passive) \(name)")
        return AMQPQueueState(messages: Int(ok?.pointee.message_count ?? 0), consumers: Int(ok?.pointee.consumer_count ?? 0))
    }

    func deleteExchange(_ name: String) throws(AMQPError) {
        let arena = CArena()
        amqp_exchange_delete(state, channel, arena.bytes(name), 0)
        try check("exchange.delete \(name)")
    }

    /// Sends a message; confirms arrive later as frames.
    func publish(_ message: AMQPMessage) throws(AMQPError) {
        let arena = CArena()
        var properties = arena.properties(message.properties)
        let status = message.body.withUnsafeBytes { body in
            amqp_basic_publish(
                state, channel, arena.bytes(message.exchange), arena.bytes(message.routingKey),
                message.mandatory ? 1 : 0, 0, &properties,
                amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            // Encoding failed before anything was written: this message cannot go, the connection can.
            if status == AMQP_STATUS_BAD_AMQP_DATA.rawValue || status == AMQP_STATUS_TABLE_TOO_BIG.rawValue
                || status == AMQP_STATUS_INVALID_PARAMETER.rawValue {
                throw .invalidMessage("rabbitmq-c cannot encode it: \(Self.errorString(status))")
            }
            throw Self.libraryError(status, operation: "basic.publish")
        }
    }

    func ack(_ tag: UInt64, multiple: Bool) throws(AMQPError) {
        let status = amqp_basic_ack(state, channel, tag, multiple ? 1 : 0)
        guard status == AMQP_STATUS_OK.rawValue else { throw Self.libraryError(status, operation: "basic.ack") }
    }

    func nack(_ tag: UInt64, requeue: Bool) throws(AMQPError) {
        let status = amqp_basic_nack(state, channel, tag, 0, requeue ? 1 : 0)
        guard status == AMQP_STATUS_OK.rawValue else { throw Self.libraryError(status, operation: "basic.nack") }
    }

    func reject(_ tag: UInt64, requeue: Bool) throws(AMQPError) {
        let status = amqp_basic_reject(state, channel, tag, requeue ? 1 : 0)
        guard status == AMQP_STATUS_OK.rawValue else { throw Self.libraryError(status, operation: "basic.reject") }
    }

    /// The next frame already received or receivable without waiting; `nil` when there is none.
    /// Also sends a heartbeat when one is due, and detects a silent broker.
    func nextFrame() throws(AMQPError) -> amqp_frame_t? {
        var frame = amqp_frame_t()
        var zero = timeval(tv_sec: 0, tv_usec: 0)
        let status = amqp_simple_wait_frame_noblock(state, &frame, &zero)
        if status == AMQP_STATUS_OK.rawValue { return frame }
        if status == AMQP_STATUS_TIMEOUT.rawValue { return nil }
        throw Self.libraryError(status, operation: "reading from the broker")
    }

    /// Reads the header and body frames that follow a deliver or return method.
    func readContent() throws(AMQPError) -> (body: [UInt8], properties: AMQPProperties) {
        var message = amqp_message_t()
        try Self.check(amqp_read_message(state, channel, &message, 0), "reading a message", state: state)
        defer { amqp_destroy_message(&message) }
        return (message.body.array, message.properties.swiftProperties)
    }

    /// Holds back partial TCP segments while `on` (TCP_CORK); turning it off sends what is held.
    func cork(_ on: Bool) {
        var value: Int32 = on ? 1 : 0
        _ = setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Whether frames are waiting in rabbitmq-c's buffers, so that `poll` would not see them.
    var hasBufferedFrames: Bool { amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0 }

    func releaseBuffers() {
        amqp_maybe_release_buffers(state)
    }

    /// Closes the channel and the connection politely; errors are ignored, the connection is
    /// going away either way.
    func close() {
        _ = amqp_channel_close(state, channel, AMQP_REPLY_SUCCESS)
        _ = amqp_connection_close(state, AMQP_REPLY_SUCCESS)
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
