/// What went wrong talking to the broker. Errors the broker sent carry its reply code and text
/// (`404 NOT_FOUND - no exchange 'x' in vhost '/'`) as it wrote them.
public enum AMQPError: Error, Sendable, Equatable {
    /// The URL could not be parsed.
    case invalidURL(String, reason: String)
    /// The TLS settings could not be applied (a missing CA file, a bad key).
    case tlsConfiguration(String)
    /// The TCP or TLS connection to `host:port` could not be opened.
    case connectFailed(host: String, port: Int, reason: String)
    /// The broker refused the credentials (403 ACCESS_REFUSED) or the virtual host.
    case accessRefused(String)
    /// The broker closed the connection: `code` and `text` are its reply.
    case connectionClosed(code: UInt16, text: String)
    /// The broker closed the channel, for example 404 on a missing exchange.
    case channelClosed(code: UInt16, text: String)
    /// The broker did not answer within the bound: `operation` names what waited.
    case timeout(operation: String)
    /// No heartbeat from the broker for twice the interval: it is hung or unreachable.
    case heartbeatTimeout
    /// The connection failed below AMQP: a socket error, as rabbitmq-c reports it.
    case connectionLost(String)
    /// A mandatory message could not be routed to any queue (basic.return).
    case unroutable(exchange: String, routingKey: String, code: UInt16, text: String)
    /// The broker refused to take responsibility for a published message (basic.nack).
    case publishNacked(exchange: String, routingKey: String)
    /// An ack, nack or reject for a delivery made on a connection that has since been replaced:
    /// the broker has already requeued the message.
    case staleDelivery(deliveryTag: UInt64)
    /// The client is shutting down or closed.
    case closed
    /// A request rabbitmq-c could not encode or the broker could not take, such as a message
    /// larger than the frame allows.
    case protocolError(String)
    /// A message AMQP cannot carry: a short string (exchange, routing key, a property, a header
    /// name) over 255 bytes, or headers too large. Nothing was sent, and sending it again cannot
    /// help; the connection is unaffected.
    case invalidMessage(String)
}

extension AMQPError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .invalidURL(let url, let reason): return "invalid AMQP URL '\(url)': \(reason)"
        case .tlsConfiguration(let reason): return "TLS configuration: \(reason)"
        case .connectFailed(let host, let port, let reason): return "cannot connect to \(host):\(port): \(reason)"
        case .accessRefused(let text): return "access refused by the broker: \(text)"
        case .connectionClosed(let code, let text): return "connection closed by the broker: \(code) \(text)"
        case .channelClosed(let code, let text): return "channel closed by the broker: \(code) \(text)"
        case .timeout(let operation): return "timed out waiting for \(operation)"
        case .heartbeatTimeout: return "no heartbeat from the broker: it is hung or unreachable"
        case .connectionLost(let reason): return "connection lost: \(reason)"
        case .unroutable(let exchange, let key, let code, let text):
            return "message to exchange '\(exchange)' with key '\(key)' was returned: \(code) \(text)"
        case .publishNacked(let exchange, let key): return "broker nacked the message to '\(exchange)' with key '\(key)'"
        case .staleDelivery(let tag): return "delivery \(tag) belongs to a previous connection; the broker requeued it"
        case .closed: return "the AMQP connection is closed"
        case .protocolError(let reason): return "AMQP protocol error: \(reason)"
        case .invalidMessage(let reason): return "message cannot be published: \(reason); nothing was sent"
        }
    }
}
