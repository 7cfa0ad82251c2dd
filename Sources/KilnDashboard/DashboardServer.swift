import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The dashboard's HTTP server: the page and its script and style (built into the binary), the
/// window as JSON (`/api/state`), the live stream of it (`/events`, server-sent events), and
/// `/healthz`. GET only. A `Service`: it stops listening on graceful shutdown.
public final class DashboardServer: Service, Sendable {
    private let host: String
    private let port: Int
    private let hub: DashboardHub
    private let logger: Logger
    private let bound = Mutex<(any Channel)?>(nil)

    public init(host: String, port: Int, hub: DashboardHub, logger: Logger) {
        self.host = host
        self.port = port
        self.hub = hub
        self.logger = logger
    }

    /// The port actually bound (useful with port 0), once running.
    public var boundPort: Int? { bound.withLock { $0?.localAddress?.port } }

    public func run() async throws {
        let hub = self.hub
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    // A connection that sends nothing for a minute (and is not a stream) is closed.
                    try channel.pipeline.syncOperations.addHandlers([IdleStateHandler(readTimeout: .seconds(60)), DashboardHandler(hub: hub)])
                }
            }
            .bind(host: host, port: port)
            .get()
        bound.withLock { $0 = channel }
        logger.info("dashboard listening on http://\(host):\(channel.localAddress?.port ?? port)/")
        // Closed on graceful shutdown, and when the group is cancelled (the feed failed, say):
        // a dashboard without its feed must exit, not go on serving a window that never moves.
        try? await withTaskCancellationOrGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onCancelOrGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// The page's files, as the binary holds them.
enum DashboardAssets {
    static let files: [String: (contentType: String, body: [UInt8])] = [
        "/": ("text/html; charset=utf-8", PackageResources.index_html),
        "/app.js": ("text/javascript; charset=utf-8", PackageResources.app_js),
        "/app.css": ("text/css; charset=utf-8", PackageResources.app_css),
    ]
}

/// Answers one connection's requests; an `/events` request turns the connection into a viewer.
private final class DashboardHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let hub: DashboardHub
    private var head: HTTPRequestHead?
    private var viewer: EventStream?

    init(hub: DashboardHub) {
        self.hub = hub
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head, viewer == nil else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, viewer == nil {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let viewer { hub.remove(viewer) }
        viewer = nil
        context.fireChannelInactive()
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        guard request.method == .GET || request.method == .HEAD else {
            return send(.methodNotAllowed, "text/plain; charset=utf-8", Array("GET only\n".utf8), request: request, context: context)
        }
        let path = String(request.uri.prefix { $0 != "?" })
        switch path {
        case "/events" where request.method == .GET:
            startStream(request: request, context: context)
        case "/events":
            send(.ok, "text/event-stream", [], request: request, context: context)
        case "/api/state":
            do {
                send(.ok, "application/json", try hub.snapshotJSON(), request: request, context: context)
            } catch {
                send(.internalServerError, "text/plain; charset=utf-8", Array("\(error)\n".utf8), request: request, context: context)
            }
        case "/healthz":
            // The process serves; whether the broker does is said, not judged (a restart would
            // not bring the broker back).
            let broker = hub.feedStatus.connected ? "connected" : "unreachable"
            send(.ok, "application/json", Array(#"{"status":"ok","broker":"\#(broker)"}"#.utf8), request: request, context: context)
        default:
            guard let file = DashboardAssets.files[path] else {
                return send(.notFound, "text/plain; charset=utf-8", Array("not found\n".utf8), request: request, context: context)
            }
            send(.ok, file.contentType, file.body, request: request, context: context)
        }
    }

    private func send(_ status: HTTPResponseStatus, _ contentType: String, _ body: [UInt8], request: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: "\(body.count)")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "x-content-type-options", value: "nosniff")
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
    }

    /// Answers with an event stream and hands the connection to the hub (503 past its viewers).
    private func startStream(request: HTTPRequestHead, context: ChannelHandlerContext) {
        guard hub.viewerCount < DashboardHub.maxViewers else {
            return send(.serviceUnavailable, "text/plain; charset=utf-8", Array("too many viewers\n".utf8), request: request, context: context)
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream")
        headers.add(name: "cache-control", value: "no-store")
        // Reverse proxies must not buffer the stream.
        headers.add(name: "x-accel-buffering", value: "no")
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: .ok, headers: headers))), promise: nil)
        let stream = EventStream(channel: context.channel)
        // Full, or shutting down, since the check above.
        guard hub.add(stream) else { return context.close(promise: nil) }
        viewer = stream
    }
}

/// One viewer's open `/events` response.
private final class EventStream: DashboardHub.Viewer {
    /// Events in a row a viewer may leave unread before it is dropped.
    static let maxSkipped = 30

    let channel: any Channel
    private let skipped = Mutex(0)

    init(channel: any Channel) {
        self.channel = channel
    }

    func send(_ bytes: ByteBuffer) -> Bool {
        guard channel.isActive else { return false }
        // A viewer that does not read keeps what it has: each event holds the whole window, so
        // the next one it can take replaces every one it missed. One that reads nothing for
        // half a minute is dropped.
        guard channel.isWritable else {
            let dropped = skipped.withLock { count in
                count += 1
                return count > Self.maxSkipped
            }
            if dropped { channel.close(promise: nil) }
            return !dropped
        }
        skipped.withLock { $0 = 0 }
        channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(bytes)), promise: nil)
        return true
    }

    func end() {
        channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { [channel] _ in channel.close(promise: nil) }
    }
}
