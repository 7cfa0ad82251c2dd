import Foundation
import KilnAMQP
import Testing

/// The broker's TLS listener (`make test` starts it, with certificates it makes for the run:
/// `KILN_AMQP_TLS_URL` and `KILN_TEST_TLS_DIR`): a client that verifies the broker gets
/// through; a wrong CA, an expired client certificate and plain text on the TLS port are
/// refused, each with an error that says which.
@Suite("TLS")
struct TLSTests {
    struct MissingTLS: Error, CustomStringConvertible {
        let description = "no TLS broker: KILN_AMQP_TLS_URL and KILN_TEST_TLS_DIR are unset (make test sets them; Tests/run-all.sh)"
    }

    var url: String { get throws { try ProcessInfo.processInfo.environment["KILN_AMQP_TLS_URL"] ?? { throw MissingTLS() }() } }
    var directory: String { get throws { try ProcessInfo.processInfo.environment["KILN_TEST_TLS_DIR"] ?? { throw MissingTLS() }() } }

    /// The TLS URL with other query items.
    func url(_ query: String) throws -> String {
        let base = try url
        return String(base[..<(base.firstIndex(of: "?") ?? base.endIndex)]) + "?" + query
    }

    /// The error connecting to `url` gives.
    func refusal(_ url: String) async throws -> AMQPError {
        var configuration = try AMQPConfiguration(url: url)
        configuration.connectTimeout = .seconds(10)
        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        do {
            try await connection.connect()
            await connection.close()
            throw MissingTLS()
        } catch let error as AMQPError {
            return error
        }
    }

    @Test func aClientThatVerifiesTheBrokerGetsThrough() async throws {
        let configuration = try AMQPConfiguration(url: try url)
        #expect(configuration.tls?.verifyPeer == true && configuration.tls?.verifyHostname == true)
        let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
        try await connection.connect()
        let names = TestBroker.uniqueNames()
        try await connection.declare(.kiln(names))
        try await connection.publish(AMQPMessage(exchange: names.invokeExchange, routingKey: "m", body: [1, 2, 3]))
        let delivered = try await connection.consume(queue: names.invocationsQueue, prefetch: 1).take(1)
        #expect(delivered.map(\.body) == [[1, 2, 3]])
        for delivery in delivered { try delivery.ack() }
        try await connection.deleteQueue(names.invocationsQueue)
        try await connection.deleteQueue(names.deadQueue)
        await connection.close()
    }

    @Test func aBrokerCertificateFromAnotherCAIsRefused() async throws {
        let error = try await refusal(try url("cacertfile=\(try directory)/other-ca.pem"))
        #expect("\(error)".contains("peer cert verification failed"), "\(error)")
    }

    @Test func anExpiredClientCertificateIsRefused() async throws {
        let directory = try directory
        let error = try await refusal(try url("cacertfile=\(directory)/ca.pem&certfile=\(directory)/expired.pem&keyfile=\(directory)/expired-key.pem"))
        #expect("\(error)".contains("refused the client certificate"), "\(error)")
    }

    @Test func plainTextOnTheTLSPortIsRefused() async throws {
        let tls = try AMQPConfiguration(url: try url)
        let error = try await refusal("amqp://guest:guest@127.0.0.1:\(tls.port)/%2f")
        #expect("\(error)".contains("a TLS port needs an amqps:// URL"), "\(error)")
    }

    @Test func anAddressInsteadOfTheCertificatesNameIsRefused() async throws {
        // rabbitmq-c checks the names of the broker's certificate, not its addresses: amqps://localhost.
        let directory = try directory
        let tls = try AMQPConfiguration(url: try url)
        let error = try await refusal("amqps://guest:guest@127.0.0.1:\(tls.port)/%2f?cacertfile=\(directory)/ca.pem")
        #expect("\(error)".contains("hostname verification failed"), "\(error)")
    }
}
