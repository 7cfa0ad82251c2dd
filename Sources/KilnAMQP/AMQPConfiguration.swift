import Foundation

/// Where and how to connect to a broker.
///
/// ```swift
/// var configuration = try AMQPConfiguration(url: "amqps://kiln:secret@broker:5671/prod?heartbeat=10")
/// configuration.tls?.caFile = "/etc/kiln/ca.pem"
/// configuration.connectionName = "kiln-worker host-a"
/// ```
///
/// rabbitmq-c waits forever by default; every wait here has a bound.
public struct AMQPConfiguration: Sendable, Equatable {
    /// TLS settings for `amqps://`.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the certificate authorities to trust; `nil` uses none, so set it
        /// whenever `verifyPeer` is on.
        public var caFile: String?
        /// PEM client certificate and key, for brokers that require client certificates.
        public var certificateFile: String?
        public var keyFile: String?
        /// Whether the broker's certificate chain is verified.
        public var verifyPeer: Bool
        /// Whether the broker's certificate must name `host`.
        public var verifyHostname: Bool

        /// Creates TLS settings; by default both the chain and the host name are verified.
        public init(
            caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
            verifyPeer: Bool = true, verifyHostname: Bool = true
        ) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.verifyPeer = verifyPeer
            self.verifyHostname = verifyHostname
        }
    }

    /// How reconnect attempts are spaced: exponential backoff with jitter.
    public struct ReconnectPolicy: Sendable, Equatable {
        /// The delay before the first attempt after a connection is lost.
        public var initialDelay: Duration
        /// The longest delay between attempts.
        public var maximumDelay: Duration
        /// The factor the delay grows by after each failed attempt.
        public var multiplier: Double
        /// The share of each delay, 0…1, drawn at random so that a fleet does not reconnect in step.
        public var jitter: Double

        /// Creates a policy.
        public init(
            initialDelay: Duration = .milliseconds(100), maximumDelay: Duration = .seconds(10),
            multiplier: Double = 2, jitter: Double = 0.3
        ) {
            self.initialDelay = initialDelay
            self.maximumDelay = maximumDelay
            self.multiplier = multiplier
            self.jitter = jitter
        }

        /// The delay before attempt `attempt` (0 for the first), jittered with `random` in 0…1.
        public func delay(attempt: Int, random: Double) -> Duration {
            let base = Double(initialDelay.components.seconds) + Double(initialDelay.components.attoseconds) / 1e18
            let cap = Double(maximumDelay.components.seconds) + Double(maximumDelay.components.attoseconds) / 1e18
            let grown = min(cap, base * pow(multiplier, Double(min(attempt, 64))))
            let jittered = grown * (1 - jitter + jitter * 2 * min(max(random, 0), 1))
            return .microseconds(Int64(min(cap, jittered) * 1e6))
        }
    }

    public var host: String
    public var port: Int
    public var virtualHost: String
    public var user: String
    public var password: String
    /// TLS settings; `nil` for a plain TCP connection.
    public var tls: TLS?
    /// The heartbeat interval proposed to the broker; zero turns heartbeats off. A broker that
    /// stops answering is detected after about twice this.
    public var heartbeat: Duration
    /// The bound on opening the TCP (and TLS) connection.
    public var connectTimeout: Duration
    /// The bound on the AMQP handshake and login.
    public var handshakeTimeout: Duration
    /// The bound on each synchronous broker call: declare, qos, consume, close.
    public var rpcTimeout: Duration
    /// The name shown for the connection in the management UI.
    public var connectionName: String
    /// The largest frame size proposed to the broker.
    public var frameMax: Int
    /// How reconnect attempts are spaced.
    public var reconnect: ReconnectPolicy

    /// Creates a configuration for a broker at `host`.
    public init(
        host: String = "127.0.0.1", port: Int? = nil, virtualHost: String = "/", user: String = "guest",
        password: String = "guest", tls: TLS? = nil, heartbeat: Duration = .seconds(10),
        connectTimeout: Duration = .seconds(5), handshakeTimeout: Duration = .seconds(10),
        rpcTimeout: Duration = .seconds(10), connectionName: String = "kiln", frameMax: Int = 131_072,
        reconnect: ReconnectPolicy = ReconnectPolicy()
    ) {
        self.host = host
        self.port = port ?? (tls == nil ? 5672 : 5671)
        self.virtualHost = virtualHost
        self.user = user
        self.password = password
        self.tls = tls
        self.heartbeat = heartbeat
        self.connectTimeout = connectTimeout
        self.handshakeTimeout = handshakeTimeout
        self.rpcTimeout = rpcTimeout
        self.connectionName = connectionName
        self.frameMax = frameMax
        self.reconnect = reconnect
    }

    /// Parses `amqp://user:pass@host:port/vhost` or `amqps://…`, following RabbitMQ's URI spec:
    /// user, password and vhost are percent-decoded, an empty path is the vhost `/`, and `%2f` is
    /// `/` too. Query keys: `heartbeat`, `connection_timeout` (seconds), `connection_name`,
    /// `cacertfile`, `certfile`, `keyfile`, `verify` (`verify_peer`/`verify_none`),
    /// `server_name_indication` (`disable` turns off host name checks).
    ///
    /// - Throws: ``AMQPError/invalidURL(_:reason:)`` naming what is wrong.
    /// The endpoints a broker address names: one URL, or the nodes of a cluster as URLs
    /// separated by commas (a comma inside a password is written `%2C`).
    public static func endpoints(_ urls: String) throws(AMQPError) -> [AMQPConfiguration] {
        let parts = urls.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw .invalidURL(urls, reason: "no URL") }
        var endpoints: [AMQPConfiguration] = []
        for part in parts { endpoints.append(try AMQPConfiguration(url: part)) }
        return endpoints
    }

    public init(url given: String) throws(AMQPError) {
        self.init()
        // Errors name the URL without its password (they reach logs and results).
        let url = Self.redacting(given)
        guard let schemeEnd = given.range(of: "://") else { throw .invalidURL(url, reason: "no scheme") }
        let scheme = given[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "amqp" || scheme == "amqps" else {
            throw .invalidURL(url, reason: "scheme must be amqp or amqps, not \(scheme.prefix(20))")
        }
        var rest = Substring(given[schemeEnd.upperBound...])
        var query = Substring()
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        var path: Substring?
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = try Self.decode(parts[0], in: url)
            // Its decoding error must not quote it either.
            password = parts.count > 1 ? try Self.decode(parts[1], in: url, quoting: false) : ""
        }
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw .invalidURL(url, reason: "unclosed IPv6 address") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") { port = try Self.port(rest.dropFirst(), in: url) }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            port = try Self.port(rest[rest.index(after: colon)...], in: url)
        } else {
            host = String(rest)
            port = scheme == "amqps" ? 5671 : 5672
        }
        if host.isEmpty { host = "127.0.0.1" }
        if scheme == "amqps" { tls = TLS() }
        if let path, !path.isEmpty {
            virtualHost = try Self.decode(path, in: url)
        }
        for item in query.split(separator: "&") where !item.isEmpty {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(pair[0])
            let value = pair.count > 1 ? try Self.decode(pair[1], in: url) : ""
            try apply(query: key, value: value, url: url)
        }
    }

    private mutating func apply(query key: String, value: String, url: String) throws(AMQPError) {
        func seconds() throws(AMQPError) -> Duration {
            guard let number = Double(value), number >= 0 else {
                throw .invalidURL(url, reason: "\(key) must be a number of seconds, not '\(value)'")
            }
            return .milliseconds(Int64(number * 1000))
        }
        func requireTLS() throws(AMQPError) {
            guard tls != nil else { throw .invalidURL(url, reason: "\(key) needs an amqps:// URL") }
        }
        switch key {
        case "heartbeat": heartbeat = try seconds()
        case "connection_timeout": connectTimeout = try seconds()
        case "connection_name": connectionName = value
        case "cacertfile":
            try requireTLS()
            tls?.caFile = value
        case "certfile":
            try requireTLS()
            tls?.certificateFile = value
        case "keyfile":
            try requireTLS()
            tls?.keyFile = value
        case "verify":
            try requireTLS()
            switch value {
            case "verify_peer": tls?.verifyPeer = true
            case "verify_none":
                tls?.verifyPeer = false
                tls?.verifyHostname = false
            default: throw .invalidURL(url, reason: "verify must be verify_peer or verify_none, not '\(value)'")
            }
        case "server_name_indication":
            try requireTLS()
            if value == "disable" { tls?.verifyHostname = false }
        default:
            throw .invalidURL(url, reason: "unknown query parameter '\(key)'")
        }
    }

    private static func port(_ text: Substring, in url: String) throws(AMQPError) -> Int {
        guard let port = Int(text), (1...65_535).contains(port) else {
            throw .invalidURL(url, reason: "port '\(text)' is not a number from 1 to 65535")
        }
        return port
    }

    private static func decode(_ text: Substring, in url: String, quoting: Bool = true) throws(AMQPError) -> String {
        guard let decoded = String(text).removingPercentEncoding else {
            throw .invalidURL(url, reason: quoting ? "bad percent-encoding in '\(text)'" : "bad percent-encoding in the password")
        }
        return decoded
    }

    /// `url` with the password between `user:` and `@` replaced by `***`.
    static func redacting(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let authorityEnd = url[schemeEnd.upperBound...].firstIndex { $0 == "/" || $0 == "?" } ?? url.endIndex
        let authority = url[schemeEnd.upperBound..<authorityEnd]
        guard let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") else { return url }
        return String(url[..<authority.index(after: colon)]) + "***" + String(url[at...])
    }

    /// The URL with the password hidden, for logs.
    public var redactedURL: String {
        let scheme = tls == nil ? "amqp" : "amqps"
        let vhost = virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? virtualHost
        return "\(scheme)://\(user)@\(host):\(port)/\(vhost)"
    }
}
