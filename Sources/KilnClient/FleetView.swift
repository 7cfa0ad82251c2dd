import KilnWire

/// What a fleet's `host.sample` events say about its workers: each worker's latest sample and
/// when it was sent, and whether it still reports. A value fed events in any order (the newest
/// sample of a worker wins); the clock is the caller's, so that a view can be judged at any time.
public struct FleetView: Sendable, Equatable {
    /// One worker as its newest sample shows it.
    public struct Worker: Sendable, Equatable {
        /// The worker's host id (`worker.host`).
        public var host: String
        /// The worker's name (`worker.name`, default `<host>-<pid>`).
        public var worker: String
        /// Its newest sample.
        public var sample: TelemetryEvent.HostSample
        /// When the worker sent it, unix µs (the worker's clock).
        public var lastSeenUs: UInt64
    }

    /// A worker's state at the time a view is judged.
    public enum State: String, Sendable, Equatable {
        /// It sent a sample within the gone-after time.
        case live
        /// It has not reported for longer than that: stopped, killed, or cut off from the broker.
        case gone
    }

    /// One line of ``entries(nowUs:goneAfterUs:)``.
    public struct Entry: Sendable, Equatable {
        public var worker: Worker
        public var state: State
        /// How long before the judging time its newest sample was sent, µs (0 for a sample
        /// stamped later than that, by a clock ahead of the judge's).
        public var silentForUs: UInt64
    }

    /// The newest sample of each worker, by worker name.
    public private(set) var workers: [String: Worker] = [:]

    public init() {}

    /// Takes `event` in if it is a `host.sample` newer than what the view has of its worker.
    public mutating func ingest(_ event: TelemetryEvent) {
        guard case .hostSample(let sample) = event.payload else { return }
        if let known = workers[event.worker], known.lastSeenUs > event.atUs { return }
        workers[event.worker] = Worker(host: event.host, worker: event.worker, sample: sample, lastSeenUs: event.atUs)
    }

    /// Every worker, live ones first, then by host and name: live when its newest sample is at
    /// most `goneAfterUs` older than `nowUs`.
    public func entries(nowUs: UInt64, goneAfterUs: UInt64) -> [Entry] {
        workers.values.map { worker in
            let silent = nowUs > worker.lastSeenUs ? nowUs - worker.lastSeenUs : 0
            return Entry(worker: worker, state: silent <= goneAfterUs ? .live : .gone, silentForUs: silent)
        }
        .sorted { ($0.state == .live ? 0 : 1, $0.worker.host, $0.worker.worker) < ($1.state == .live ? 0 : 1, $1.worker.host, $1.worker.worker) }
    }
}
