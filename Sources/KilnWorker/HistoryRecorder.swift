import KilnPredict
import Logging
import ServiceLifecycle
import Synchronization

/// Writes finished invocations to the execution history off the hot path: the pipeline hands
/// records over without waiting; every `interval` this service writes what arrived in one
/// transaction. A `Service`: on graceful shutdown it writes what is left, then stops.
public final class HistoryRecorder: Service, Sendable {
    private let history: ExecutionHistory
    private let pending = Mutex<[ExecutionRecord]>([])
    private let interval: Duration
    private let logger: Logger

    public init(history: ExecutionHistory, interval: Duration = .milliseconds(200), logger: Logger) {
        self.history = history
        self.interval = interval
        self.logger = logger
    }

    /// Hands a record over; never waits (beyond a lock held for an append).
    public func record(_ record: ExecutionRecord) {
        pending.withLock { $0.append(record) }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: self.interval)
                } catch {
                    break
                }
                self.flush()
            }
        }
        flush()
    }

    /// Writes what has arrived.
    public func flush() {
        let batch = pending.withLock { pending in
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            return batch
        }
        guard !batch.isEmpty else { return }
        do {
            let skipped = try history.append(batch)
            if skipped > 0 { logger.warning("left \(skipped) history records with numbers that are not finite out of the history") }
        } catch {
            logger.error("could not write \(batch.count) history records: \(error)")
        }
    }
}
