import Foundation
import KilnWire
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Where telemetry meets viewers: it keeps the ``FleetWindow`` that the feed fills, and, once a
/// second, renders one snapshot and writes the same bytes to every page watching `/events` (and
/// keeps them for `/api/state`), so that a hundred viewers cost one rendering, done off the
/// server's event loop. A `Service`: the ticks stop on graceful shutdown, and the viewers'
/// streams end with it.
public final class DashboardHub: Service, Sendable {
    /// A viewer's server-sent event stream.
    public protocol Viewer: AnyObject, Sendable {
        /// Sends one event's bytes; false once the viewer has gone (or was dropped for not
        /// reading).
        func send(_ bytes: ByteBuffer) -> Bool
        /// Ends the stream.
        func end()
    }

    /// Viewers at most; more are refused (503).
    public static let maxViewers = 256

    private let window: Mutex<FleetWindow>
    private let feed = Mutex(DashboardSnapshot.FeedStatus())
    private let viewers = Mutex<(open: [ObjectIdentifier: any Viewer], closed: Bool)>(([:], false))
    /// The last rendering, as JSON, and when it was made.
    private let rendered = Mutex<(json: [UInt8], atUs: UInt64)?>(nil)
    private let tick: Duration
    private let now: @Sendable () -> UInt64
    private let logger: Logger
    private let decoder = MessagePackDecoder()

    /// - Parameters:
    ///   - limits: The window's bounds.
    ///   - tick: How often viewers get a new snapshot.
    ///   - now: The clock, Unix microseconds (injected by tests).
    public init(
        limits: FleetWindow.Limits = .init(), tick: Duration = .seconds(1),
        now: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1_000_000) }, logger: Logger
    ) {
        window = Mutex(FleetWindow(limits: limits))
        self.tick = tick
        self.now = now
        self.logger = logger
    }

    // MARK: The feed's side

    /// Takes one body from `kiln.telemetry`; one that is not an event is counted and dropped.
    public func ingest(body: [UInt8]) {
        let event: TelemetryEvent
        do {
            event = try decoder.decode(TelemetryEvent.self, from: body)
        } catch {
            feed.withLock { $0.undecodable += 1 }
            return
        }
        let at = now()
        window.withLock { $0.ingest(event, nowUs: at) }
        feed.withLock { $0.lastEventUs = at }
    }

    /// Records the feed's connection state.
    public func feedConnection(connected: Bool, connections: Int) {
        feed.withLock {
            $0.connected = connected
            $0.connections = connections
        }
    }

    /// Records that the feed's queue is bound and read.
    public func feedReading() {
        feed.withLock { $0.reading = true }
    }

    // MARK: The viewers' side

    /// The feed's link to the broker now.
    public var feedStatus: DashboardSnapshot.FeedStatus { feed.withLock { $0 } }

    /// The window now. Read from a copy: the feed goes on while it is built.
    public func snapshot() -> DashboardSnapshot {
        let status = feedStatus
        let at = now()
        let copy = window.withLock { $0 }
        return copy.snapshot(nowUs: at, feed: status)
    }

    /// The window as JSON: the last tick's rendering while it is younger than a tick, else a
    /// new one.
    public func snapshotJSON() throws -> [UInt8] {
        let tickUs = UInt64(tick.components.seconds) * 1_000_000 + UInt64(tick.components.attoseconds / 1_000_000_000_000)
        if let last = rendered.withLock({ $0 }), now() < last.atUs &+ tickUs { return last.json }
        return try render()
    }

    /// Renders the window and keeps the result.
    private func render() throws -> [UInt8] {
        let json = try snapshot().json()
        let at = now()
        rendered.withLock { $0 = (json, at) }
        return json
    }

    /// Adds a viewer, which gets the current window at once, then one per tick; false (the
    /// viewer is not added) past ``maxViewers`` or once the hub has shut down.
    public func add(_ viewer: any Viewer) -> Bool {
        let added = viewers.withLock { viewers in
            guard !viewers.closed, viewers.open.count < Self.maxViewers else { return false }
            viewers.open[ObjectIdentifier(viewer)] = viewer
            return true
        }
        guard added else { return false }
        if let json = try? snapshotJSON(), !viewer.send(Self.event(json)) { remove(viewer) }
        return true
    }

    /// Removes a viewer that went away.
    public func remove(_ viewer: any Viewer) {
        _ = viewers.withLock { $0.open.removeValue(forKey: ObjectIdentifier(viewer)) }
    }

    /// Viewers watching now.
    public var viewerCount: Int { viewers.withLock { $0.open.count } }

    public func run() async throws {
        let tick = self.tick
        try? await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                try await Task.sleep(for: tick)
                broadcast()
            }
        }
        let ending = viewers.withLock { viewers in
            viewers.closed = true
            defer { viewers.open.removeAll() }
            return Array(viewers.open.values)
        }
        for viewer in ending { viewer.end() }
    }

    /// Renders one snapshot and sends it to every viewer.
    func broadcast() {
        let json: [UInt8]
        do {
            json = try render()
        } catch {
            logger.error("dashboard snapshot not encoded: \(error)")
            return
        }
        let current = viewers.withLock { Array($0.open.values) }
        guard !current.isEmpty else { return }
        let event = Self.event(json)
        for viewer in current where !viewer.send(event) { remove(viewer) }
    }

    /// A server-sent `state` event holding `json`.
    static func event(_ json: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(json.count + 32)
        buffer.writeString("event: state\ndata: ")
        buffer.writeBytes(json)
        buffer.writeString("\n\n")
        return buffer
    }
}
