import Foundation
import KilnWire
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Where telemetry meets viewers: it keeps the ``FleetWindow`` that the feed fills, and, once a
/// second, renders one snapshot and writes the same bytes to every page watching `/events`, so
/// that a hundred viewers cost one rendering. A `Service`: the ticks stop on graceful shutdown,
/// and the viewers' streams end with it.
public final class DashboardHub: Service, Sendable {
    /// A viewer's server-sent event stream.
    public protocol Viewer: AnyObject, Sendable {
        /// Sends one event's bytes; false once the viewer has gone.
        func send(_ bytes: ByteBuffer) -> Bool
        /// Ends the stream.
        func end()
    }

    private let window: Mutex<FleetWindow>
    private let feed = Mutex(DashboardSnapshot.FeedStatus())
    private let viewers = Mutex<[ObjectIdentifier: any Viewer]>([:])
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

    // MARK: The viewers' side

    /// The window now.
    public func snapshot() -> DashboardSnapshot {
        let status = feed.withLock { $0 }
        let at = now()
        return window.withLock { $0.snapshot(nowUs: at, feed: status) }
    }

    /// Adds a viewer; it gets the current snapshot at once, then one per tick.
    public func add(_ viewer: any Viewer) {
        viewers.withLock { $0[ObjectIdentifier(viewer)] = viewer }
        if let event = try? Self.event(snapshot()), !viewer.send(event) { remove(viewer) }
    }

    /// Removes a viewer that went away.
    public func remove(_ viewer: any Viewer) {
        _ = viewers.withLock { $0.removeValue(forKey: ObjectIdentifier(viewer)) }
    }

    /// Viewers watching now.
    public var viewerCount: Int { viewers.withLock { $0.count } }

    public func run() async throws {
        let tick = self.tick
        try? await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                try await Task.sleep(for: tick)
                broadcast()
            }
        }
        for viewer in viewers.withLock({ viewers in defer { viewers.removeAll() }; return Array(viewers.values) }) { viewer.end() }
    }

    /// Renders one snapshot and sends it to every viewer.
    func broadcast() {
        let current = viewers.withLock { Array($0.values) }
        guard !current.isEmpty else { return }
        let event: ByteBuffer
        do {
            event = try Self.event(snapshot())
        } catch {
            logger.error("dashboard snapshot not encoded: \(error)")
            return
        }
        for viewer in current where !viewer.send(event) { remove(viewer) }
    }

    /// A server-sent `state` event holding `snapshot`.
    static func event(_ snapshot: DashboardSnapshot) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeString("event: state\ndata: ")
        buffer.writeBytes(try snapshot.json())
        buffer.writeString("\n\n")
        return buffer
    }
}
