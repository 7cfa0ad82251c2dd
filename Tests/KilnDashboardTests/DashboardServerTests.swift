import Foundation
import KilnDashboard
import KilnWire
import Logging
import NIOCore
import ServiceLifecycle
import Testing

/// The dashboard's HTTP side over a real socket: the page and its files from the binary, the
/// window as JSON, the live stream that many viewers share, and what it refuses.
@Suite("The dashboard's server")
struct DashboardServerTests {
    static let logger = Logger(label: "kiln.test") { _ in SwiftLogNoOpLogHandler() }

    /// A server on port 0 around `hub`, for the time of `body`.
    static func withServer(_ hub: DashboardHub, _ body: (Int) async throws -> Void) async throws {
        let server = DashboardServer(host: "127.0.0.1", port: 0, hub: hub, logger: logger)
        let running = Task { try await server.run() }
        defer { running.cancel() }
        var port: Int?
        for _ in 0..<5_000 where port == nil {
            port = server.boundPort
            if port == nil { try await Task.sleep(for: .milliseconds(2)) }
        }
        try await body(try #require(port))
    }

    @Test func thePageItsFilesAndTheWindowAsJSON() async throws {
        let hub = DashboardHub(logger: Self.logger)
        hub.ingest(body: try MessagePackEncoder().encode(FleetWindowTests.completed("inv-1")))
        try await Self.withServer(hub) { port in
            let page = try await blocking { try HTTPExchange.get("/", port: port) }
            #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true)
            #expect(page.body.contains("<script src=\"app.js\"></script>"))
            let script = try await blocking { try HTTPExchange.get("/app.js", port: port) }
            #expect(script.body.contains("new EventSource(\"events\")"))
            let style = try await blocking { try HTTPExchange.get("/app.css", port: port) }
            #expect(style.headers["content-type"]?.hasPrefix("text/css") == true)
            let state = try await blocking { try HTTPExchange.get("/api/state", port: port) }
            let snapshot = try JSONDecoder.snakeCase.decode(DashboardSnapshot.self, from: Data(state.body.utf8))
            #expect(snapshot.invocations.map(\.id) == ["inv-1"])
            #expect(try await blocking { try HTTPExchange.get("/nothing-here", port: port) }.status == 404)
            let post = try await blocking {
                try HTTPExchange.send("POST /api/state HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", port: port)
            }
            #expect(post.status == 405)
            // HEAD of the stream: its headers, and the response ends (no viewer is made).
            let head = try await blocking { try HTTPExchange.send("HEAD /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", port: port) }
            #expect(head.status == 200 && head.body.isEmpty && head.headers["content-type"] == "text/event-stream")
            #expect(hub.viewerCount == 0)
            let health = try await blocking { try HTTPExchange.get("/healthz", port: port) }
            #expect(health.body.contains(#""broker":"unreachable""#), "\(health.body)")
        }
    }

    @Test func everyViewerGetsTheWindowAtOnceAndThenEachTick() async throws {
        let hub = DashboardHub(tick: .milliseconds(50), logger: Self.logger)
        let ticking = Task { try await hub.run() }
        defer { ticking.cancel() }
        try await Self.withServer(hub) { port in
            let viewers = try (0..<3).map { _ in try EventReader(port: port) }
            for viewer in viewers { #expect(try await blocking { try viewer.nextEvent() }.invocations.isEmpty) }
            #expect(hub.viewerCount == 3)
            // What arrives after they connected reaches each of them with a later tick. On a loaded
            // host many earlier windows may wait in the socket first: each viewer reads on until
            // one holds it (the socket's read timeout fails the test if the ticks stop).
            hub.ingest(body: try MessagePackEncoder().encode(FleetWindowTests.completed("inv-2")))
            for viewer in viewers {
                let seen = try await blocking {
                    var seen = try viewer.nextEvent()
                    while seen.invocations.isEmpty { seen = try viewer.nextEvent() }
                    return seen
                }
                #expect(seen.invocations.map(\.id) == ["inv-2"])
            }
            // A viewer that leaves is dropped at the next tick.
            viewers[0].close()
            for _ in 0..<1_000 where hub.viewerCount > 2 { try await Task.sleep(for: .milliseconds(5)) }
            #expect(hub.viewerCount == 2)
        }
    }

    @Test func aBodyThatIsNotAnEventIsCountedAndTheRestGoesOn() throws {
        let hub = DashboardHub(logger: Self.logger)
        hub.ingest(body: [0xc1])
        hub.ingest(body: Array("not msgpack".utf8))
        hub.ingest(body: try MessagePackEncoder().encode(FleetWindowTests.completed("fine")))
        let snapshot = hub.snapshot()
        #expect(snapshot.feed.undecodable == 2)
        #expect(snapshot.totals.events == 1)
        #expect(snapshot.invocations.map(\.id) == ["fine"])
    }
}

/// Runs blocking socket I/O on a Dispatch thread rather than on Swift's cooperative pool (two
/// threads on this host), where it would hold back the server's and the hub's tasks.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
    }
}

extension JSONDecoder {
    static var snakeCase: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// One HTTP/1.1 request over a plain socket, read to the end (the server closes it).
enum HTTPExchange {
    struct Response: Sendable {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    static func get(_ path: String, port: Int) throws -> Response {
        try send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", port: port)
    }

    static func send(_ request: String, port: Int) throws -> Response {
        let socket = try TestSocket(port: port)
        defer { socket.close() }
        try socket.write(request)
        var raw = [UInt8]()
        while let chunk = try socket.read() { raw += chunk }
        let text = String(decoding: raw, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw TestSocket.Failure("no header end in \(text.prefix(200))") }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Response(status: status, headers: headers, body: String(text[split.upperBound...]))
    }
}

/// A viewer of `/events`: reads the stream one server-sent event at a time (one task at a time).
final class EventReader: @unchecked Sendable {
    private let socket: TestSocket
    private var buffer = ""

    init(port: Int) throws {
        socket = try TestSocket(port: port)
        try socket.write("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    }

    /// The next `state` event's window.
    func nextEvent() throws -> DashboardSnapshot {
        while true {
            if let start = buffer.range(of: "event: state\ndata: "), let end = buffer.range(of: "\n\n", range: start.upperBound..<buffer.endIndex) {
                let json = String(buffer[start.upperBound..<end.lowerBound])
                buffer = String(buffer[end.upperBound...])
                return try JSONDecoder.snakeCase.decode(DashboardSnapshot.self, from: Data(json.utf8))
            }
            guard let chunk = try socket.read() else { throw TestSocket.Failure("the stream ended") }
            // The body comes chunked: the chunk sizes between events are not part of any event.
            buffer += String(decoding: chunk, as: UTF8.self)
        }
    }

    func close() { socket.close() }
}

/// A blocking TCP socket to 127.0.0.1 with a 30 s read timeout: a test that waits for nothing
/// fails instead of hanging.
final class TestSocket: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private var fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure("connect to \(port): errno \(errno)") }
    }

    func write(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else { throw Failure("write: errno \(errno)") }
    }

    /// The next bytes; nil at the end of the stream.
    func read() throws -> [UInt8]? {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = Glibc.read(fd, &chunk, chunk.count)
        guard count >= 0 else { throw Failure("read: errno \(errno) (a timeout is EAGAIN)") }
        return count == 0 ? nil : Array(chunk[..<count])
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
