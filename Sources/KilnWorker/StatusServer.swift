import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A small HTTP/1.1 server for operators: Prometheus `/metrics`, `/healthz`, and JSON status
/// pages. GET only; each route renders its whole body. A `Service`: it stops listening on
/// graceful shutdown.
public final class StatusServer: Service, Sendable {
    /// A rendered response.
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: [UInt8]

        public init(status: HTTPResponseStatus = .ok, contentType: String, body: [UInt8]) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }

        public static func text(_ text: String, status: HTTPResponseStatus = .ok) -> Response {
            Response(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
        }

        public static func json(_ json: [UInt8], status: HTTPResponseStatus = .ok) -> Response {
            Response(status: status, contentType: "application/json", body: json)
        }
    }

    public typealias Route = @Sendable () async -> Response

    private let address: HostAndPort
    private let routes: [String: Route]
    private let logger: Logger
    private let bound = Mutex<(any Channel)?>(nil)

    /// Creates a server on `address` for `routes` (path → renderer).
    public init(address: HostAndPort, routes: [String: Route], logger: Logger) {
        self.address = address
        self.routes = routes
        self.logger = logger
    }

    /// The port actually bound (useful with port 0), once running.
    public var port: Int? { bound.withLock { $0?.localAddress?.port } }

    public func run() async throws {
        let routes = self.routes
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(RouteHandler(routes: routes))
                }
            }
            .bind(host: address.host, port: address.port)
            .get()
        bound.withLock { $0 = channel }
        logger.info("status server listening on \(channel.localAddress?.description ?? "?")")
        await withGracefulShutdownHandler {
            try? await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// Answers each request from the route table.
private final class RouteHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: [String: StatusServer.Route]
    private var head: HTTPRequestHead?

    init(routes: [String: StatusServer.Route]) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            let path = String(request.uri.split(separator: "?", maxSplits: 1).first ?? "")
            let keepAlive = request.isKeepAlive
            let loop = context.eventLoop
            let handler = NIOLoopBound(self, eventLoop: loop)
            let boundContext = NIOLoopBound(context, eventLoop: loop)
            guard request.method == .GET || request.method == .HEAD else {
                respond(context: context, .text("only GET\n", status: .methodNotAllowed), keepAlive: keepAlive, head: false)
                return
            }
            guard let route = routes[path] else {
                respond(context: context, .text("not found: \(path)\n", status: .notFound), keepAlive: keepAlive, head: false)
                return
            }
            let isHead = request.method == .HEAD
            let promise = loop.makePromise(of: StatusServer.Response.self)
            promise.completeWithTask { await route() }
            promise.futureResult.whenSuccess { response in
                handler.value.respond(context: boundContext.value, response, keepAlive: keepAlive, head: isHead)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, _ response: StatusServer.Response, keepAlive: Bool, head: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        if !head {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlushPromise()
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            let channel = context.channel
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise() -> EventLoopPromise<Void> { eventLoop.makePromise() }
}
