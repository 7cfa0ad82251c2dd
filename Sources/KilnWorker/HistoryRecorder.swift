import KilnPredict
import KilnWire
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
            try history.append(batch)
        } catch {
            logger.error("could not write \(batch.count) history records: \(error)")
        }
    }
}

extension MessagePackValue {
    /// The numbers among the top-level entries of a map (strings, binaries and arrays by their
    /// length, as `key.len`), at most eight, by key: the features a latency model can use.
    var numericFeatures: [String: Double] {
        guard case .map(let entries) = self else { return [:] }
        var features: [String: Double] = [:]
        for entry in entries {
            guard let key = entry.key.stringValue, key.count <= 64 else { continue }
            switch entry.value {
            case .int(let value): features[key] = Double(value)
            case .uint(let value): features[key] = Double(value)
            case .float(let value) where value.isFinite: features[key] = Double(value)
            case .double(let value) where value.isFinite: features[key] = value
            case .string(let text): features["\(key).len"] = Double(text.utf8.count)
            case .binary(let bytes): features["\(key).len"] = Double(bytes.count)
            case .array(let elements): features["\(key).len"] = Double(elements.count)
            default: break
            }
        }
        if features.count > 8 {
            features = Dictionary(uniqueKeysWithValues: features.keys.sorted().prefix(8).map { ($0, features[$0]!) })
        }
        return features
    }
}
