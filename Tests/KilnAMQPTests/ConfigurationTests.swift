import KilnAMQP
import Testing

@Suite("AMQP configuration")
struct ConfigurationTests {
    @Test func plainURL() throws {
        let configuration = try AMQPConfiguration(url: "amqp://kiln:s3cr%40t@broker.example:5673/prod%2Fa?heartbeat=5&connection_name=worker%201")
        #expect(configuration.host == "broker.example")
        #expect(configuration.port == 5673)
        #expect(configuration.user == "kiln")
        #expect(configuration.password == "s3cr@t")
        #expect(configuration.virtualHost == "prod/a")
        #expect(configuration.heartbeat == .seconds(5))
        #expect(configuration.connectionName == "worker 1")
        #expect(configuration.tls == nil)
        #expect(configuration.redactedURL == "amqp://kiln@broker.example:5673/prod%2Fa")
    }

    @Test func defaults() throws {
        let configuration = try AMQPConfiguration(url: "amqp://")
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 5672)
        #expect(configuration.virtualHost == "/")
        #expect(configuration.user == "guest")
        #expect(try AMQPConfiguration(url: "amqp://h/%2f").virtualHost == "/")
        #expect(try AMQPConfiguration(url: "amqp://[::1]:5680").host == "::1")
        #expect(try AMQPConfiguration(url: "amqp://[::1]:5680").port == 5680)
    }

    @Test func tlsURL() throws {
        let configuration = try AMQPConfiguration(
            url: "amqps://kiln@broker/?cacertfile=/etc/kiln/ca.pem&certfile=/etc/kiln/c.pem&keyfile=/etc/kiln/k.pem&server_name_indication=disable")
        #expect(configuration.port == 5671)
        #expect(configuration.tls == AMQPConfiguration.TLS(
            caFile: "/etc/kiln/ca.pem", certificateFile: "/etc/kiln/c.pem", keyFile: "/etc/kiln/k.pem",
            verifyPeer: true, verifyHostname: false))
        let unverified = try AMQPConfiguration(url: "amqps://broker?verify=verify_none")
        #expect(unverified.tls?.verifyPeer == false)
        #expect(unverified.tls?.verifyHostname == false)
    }

    @Test(arguments: [
        ("http://broker", "scheme must be amqp or amqps, not http"),
        ("broker:5672", "no scheme"),
        ("amqp://broker:99999", "port '99999' is not a number from 1 to 65535"),
        ("amqp://broker?cacertfile=/ca.pem", "cacertfile needs an amqps:// URL"),
        ("amqp://broker?heartbeat=soon", "heartbeat must be a number of seconds, not 'soon'"),
        ("amqp://broker?colour=blue", "unknown query parameter 'colour'"),
        ("amqps://broker?verify=maybe", "verify must be verify_peer or verify_none, not 'maybe'"),
    ])
    func badURLsSayWhatIsWrong(url: String, reason: String) {
        #expect(throws: AMQPError.invalidURL(url, reason: reason)) { try AMQPConfiguration(url: url) }
    }

    @Test func backoffGrowsToItsCapWithJitter() {
        let policy = AMQPConfiguration.ReconnectPolicy(
            initialDelay: .milliseconds(100), maximumDelay: .seconds(2), multiplier: 2, jitter: 0.5)
        #expect(policy.delay(attempt: 0, random: 0.5) == .milliseconds(100))
        #expect(policy.delay(attempt: 3, random: 0.5) == .milliseconds(800))
        #expect(policy.delay(attempt: 30, random: 0.5) == .seconds(2))
        #expect(policy.delay(attempt: 1, random: 0) == .milliseconds(100))
        #expect(policy.delay(attempt: 1, random: 1) == .milliseconds(300))
        #expect(policy.delay(attempt: 30, random: 1) == .seconds(2))
    }

    /// Errors reach logs and results: none may quote the password.
    @Test(arguments: [
        "amqp://user:hunter2-secret@host:99999/%2f", "amqp://user:hunter2-secret@host/%zz", "ftp://user:hunter2-secret@host/",
        "amqp://user:hunter2-secret@host/?verify=maybe", "amqp://user:hunter2%zzsecret@host/", "amqp://user:hunter2-secret@host/?nope=1",
    ])
    func errorsNeverQuoteThePassword(_ url: String) {
        do {
            _ = try AMQPConfiguration(url: url)
            Issue.record("\(url) parsed")
        } catch {
            #expect(!"\(error)".contains("hunter2"), "\(error)")
            #expect("\(error)".contains("user:***@host") || "\(error)".contains("password"), "\(error)")
        }
    }

    @Test func theRedactedURLHasNoPassword() throws {
        #expect(try AMQPConfiguration(url: "amqps://kiln:s3cret@broker:5671/prod").redactedURL == "amqps://kiln@broker:5671/prod")
    }
}
