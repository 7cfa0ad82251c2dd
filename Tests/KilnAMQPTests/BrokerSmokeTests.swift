import CRabbitMQ
import Foundation
import KilnWire
import Testing

/// The foundation's smoke test: an Invocation encoded by KilnWire goes through a real RabbitMQ
/// by rabbitmq-c and comes back intact. `make test` starts the broker and sets KILN_AMQP_URL.
@Suite("Broker smoke test")
struct BrokerSmokeTests {
    @Test func invocationSurvivesARoundTripThroughRabbitMQ() throws {
        let invocation = Invocation(
            id: "smoke-\(UUID().uuidString)", method: "echo",
            args: ["text": "through the broker", "blob": .binary([0, 1, 2, 254, 255])],
            context: ExecutionContext(locals: ["n": 1], state: Array(repeating: 7, count: 300)),
            deadlineMs: 1_000, submittedAtUs: 1_795_939_200_000_000
        )
        let body = try MessagePackEncoder().encode(invocation)

        let connection = try SmokeConnection(url: ProcessInfo.processInfo.environment["KILN_AMQP_URL"]
            ?? "amqp://guest:guest@127.0.0.1:5672/%2f")
        defer { connection.close() }
        let queue = try connection.declareTemporaryQueue()
        try connection.publish(body, routingKey: queue, contentType: "application/msgpack")
        let (received, contentType) = try connection.get(queue)

        #expect(contentType == "application/msgpack")
        #expect(received == body)
        let decoded = try received.withUnsafeBytes { try Invocation.decode(body: $0, messageID: nil) }
        #expect(decoded == invocation)
    }
}

/// A bare rabbitmq-c connection, enough for the smoke test (KilnAMQP is the real client).
final class SmokeConnection {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let state: amqp_connection_state_t
    private let channel: amqp_channel_t = 1

    init(url: String) throws {
        var info = amqp_connection_info()
        var urlBytes = Array(url.utf8CString)
        guard amqp_parse_url(&urlBytes, &info) == 0 else { throw Failure(description: "bad AMQP URL \(url)") }
        guard let state = amqp_new_connection() else { throw Failure(description: "amqp_new_connection failed") }
        self.state = state
        let socket = amqp_tcp_socket_new(state)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        guard amqp_socket_open_noblock(socket, info.host, info.port, &timeout) == 0 else {
            amqp_destroy_connection(state)
            throw Failure(description: "cannot reach the broker at \(url); run deploy/local/rabbitmq.sh start")
        }
        _ = amqp_set_rpc_timeout(state, &timeout)
        try check(kiln_amqp_login_plain(state, info.vhost, 0, 131_072, 0, nil, info.user, info.password), "login")
        amqp_channel_open(state, channel)
        try check(amqp_get_rpc_reply(state), "channel.open")
    }

    func declareTemporaryQueue() throws -> String {
        let ok = amqp_queue_declare(state, channel, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table)
        try check(amqp_get_rpc_reply(state), "queue.declare")
        guard let ok else { throw Failure(description: "queue.declare returned nothing") }
        return String(decoding: UnsafeRawBufferPointer(start: ok.pointee.queue.bytes, count: ok.pointee.queue.len), as: UTF8.self)
    }

    func publish(_ body: [UInt8], routingKey: String, contentType: String) throws {
        try withBytes(routingKey) { key in
            try withBytes(contentType) { type in
                var properties = amqp_basic_properties_t()
                properties._flags = KILN_AMQP_BASIC_CONTENT_TYPE_FLAG
                properties.content_type = type
                let status = body.withUnsafeBytes { raw in
                    amqp_basic_publish(state, channel, amqp_empty_bytes, key, 0, 0, &properties,
                                       amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress)))
                }
                guard status == 0 else { throw Failure(description: "publish failed: \(status)") }
            }
        }
    }

    func get(_ queue: String) throws -> (body: [UInt8], contentType: String?) {
        try withBytes(queue) { queueBytes in
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline {
                let reply = amqp_basic_get(state, channel, queueBytes, 1)
                try check(reply, "basic.get")
                guard reply.reply.id == KILN_AMQP_BASIC_GET_OK else {
                    usleep(10_000)
                    continue
                }
                var message = amqp_message_t()
                try check(amqp_read_message(state, channel, &message, 0), "read message")
                defer { amqp_destroy_message(&message) }
                let body = [UInt8](UnsafeRawBufferPointer(start: message.body.bytes, count: message.body.len))
                var contentType: String?
                if message.properties._flags & KILN_AMQP_BASIC_CONTENT_TYPE_FLAG != 0 {
                    let type = message.properties.content_type
                    contentType = String(decoding: UnsafeRawBufferPointer(start: type.bytes, count: type.len), as: UTF8.self)
                }
                return (body, contentType)
            }
            throw Failure(description: "no message arrived on \(queue) within 5 s")
        }
    }

    func close() {
        amqp_channel_close(state, channel, AMQP_REPLY_SUCCESS)
        amqp_connection_close(state, AMQP_REPLY_SUCCESS)
        amqp_destroy_connection(state)
    }

    private func check(_ reply: amqp_rpc_reply_t, _ what: String) throws {
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            throw Failure(description: "\(what) failed: reply type \(reply.reply_type.rawValue), library error \(reply.library_error)")
        }
    }

    private func withBytes<T>(_ string: String, _ body: (amqp_bytes_t) throws -> T) throws -> T {
        let bytes = string.withCString { amqp_bytes_malloc_dup(amqp_cstring_bytes($0)) }
        defer { amqp_bytes_free(bytes) }
        return try body(bytes)
    }
}
