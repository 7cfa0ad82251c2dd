import Foundation
import GRDB

/// How much history to keep.
public struct HistoryRetention: Sendable, Equatable {
    /// Records kept at most; the oldest go first.
    public var maxRecords: Int
    /// Records older than this go.
    public var maxAge: Duration

    public init(maxRecords: Int = 200_000, maxAge: Duration = .seconds(14 * 86_400)) {
        self.maxRecords = maxRecords
        self.maxAge = maxAge
    }
}

/// The execution history: every finished invocation's features and outcome, in an embedded
/// SQLite database, bounded by a retention. The models are trained from it at start, so a new
/// worker on a host with history starts warm; `kiln history export|import` move it between hosts.
public final class ExecutionHistory: Sendable {
    private let database: DatabaseQueue
    public let retention: HistoryRetention

    /// Opens (creating if needed) the history at `path`; `:memory:` keeps it in memory.
    public init(path: String, retention: HistoryRetention = HistoryRetention()) throws {
        if path != ":memory:" {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.label = "kiln.history"
        database = path == ":memory:" ? try DatabaseQueue(configuration: configuration) : try DatabaseQueue(path: path, configuration: configuration)
        self.retention = retention
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "execution") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("invocation_id", .text).notNull().indexed()
                table.column("recorded_at_us", .integer).notNull().indexed()
                table.column("method", .text).notNull()
                table.column("args_bytes", .integer).notNull()
                table.column("numeric_args", .text).notNull()
                table.column("profile", .text).notNull()
                table.column("vcpus", .integer).notNull()
                table.column("memory_mb", .integer).notNull()
                table.column("backend", .text).notNull()
                table.column("warmth", .text).notNull()
                table.column("reuse_count", .integer).notNull()
                table.column("host_cpu", .double).notNull()
                table.column("memory_pressure", .double).notNull()
                table.column("concurrent_executions", .integer).notNull()
                table.column("queue_depth", .integer).notNull()
                table.column("idle_vms", .integer).notNull()
                table.column("provisions_in_flight", .integer).notNull()
                table.column("provision_us", .double).notNull()
                table.column("exec_us", .double).notNull()
                table.column("succeeded", .boolean).notNull()
                table.column("predicted_us", .double)
                table.column("predictor", .text)
                table.column("placement", .text)
            }
        }
        migrator.registerMigration("v2: feature schema, CPU pressure, network, dependencies, deadline, baseline") { db in
            try db.alter(table: "execution") { table in
                table.add(column: "schema", .integer)
                table.add(column: "network_bps", .double)
                table.add(column: "cpu_pressure", .double)
                table.add(column: "dependency_mb", .double)
                table.add(column: "unloaded_dependency_mb", .double)
                table.add(column: "deadline_ms", .integer)
                table.add(column: "baseline_us", .double)
            }
        }
        migrator.registerMigration("v3: usage") { db in
            try db.alter(table: "execution") { table in
                table.add(column: "usage_cpu_us", .integer)
                table.add(column: "usage_host_cpu_us", .integer)
                table.add(column: "usage_peak_memory_kb", .integer)
                table.add(column: "usage_bytes_in", .integer)
                table.add(column: "usage_bytes_out", .integer)
            }
        }
        try migrator.migrate(database)
    }

    /// Adds records in one transaction, then applies the retention. A record holding a number
    /// that is not finite is left out (SQLite would store NaN as NULL and refuse the whole
    /// batch); returns how many were.
    @discardableResult
    public func append(_ records: [ExecutionRecord]) throws -> Int {
        let finite = records.filter(\.isFinite)
        guard !finite.isEmpty else { return records.count }
        try database.write { db in
            for record in finite { try StoredRecord(record.storable).insert(db) }
            let horizon = Int64(clamping: finite.map(\.recordedAtUs).max() ?? 0) &- retention.maxAge.inWholeMicroseconds
            try db.execute(sql: "DELETE FROM execution WHERE recorded_at_us < ?", arguments: [horizon])
            try db.execute(
                sql: "DELETE FROM execution WHERE id <= (SELECT id FROM execution ORDER BY id DESC LIMIT 1 OFFSET ?)",
                arguments: [retention.maxRecords])
        }
        return records.count - finite.count
    }

    /// Calls `body` with every record, oldest first, a page at a time: memory stays flat however
    /// long the history (a worker replays 200,000 records at start).
    public func forEach(pageSize: Int = 2_000, _ body: (ExecutionRecord) throws -> Void) throws {
        var after: Int64 = 0
        while true {
            let page = try database.read { db in
                try StoredRecord.filter(Column("id") > after).order(Column("id")).limit(max(1, pageSize)).fetchAll(db)
            }
            guard let last = page.last?.id else { return }
            for stored in page { try body(stored.record) }
            after = last
        }
    }

    /// Every record, oldest first.
    public func all() throws -> [ExecutionRecord] {
        try database.read { db in try StoredRecord.order(Column("id")).fetchAll(db).map(\.record) }
    }

    /// The records of one invocation (more than one when it was redelivered).
    public func records(invocationID: String) throws -> [ExecutionRecord] {
        try database.read { db in
            try StoredRecord.filter(Column("invocation_id") == invocationID).order(Column("id")).fetchAll(db).map(\.record)
        }
    }

    public func count() throws -> Int {
        try database.read { db in try StoredRecord.fetchCount(db) }
    }

    /// What each method consumed, from the records made at or after `sinceUs` (Unix µs), of
    /// `method` only when given; ordered by method. Every attempt counts, as each one ran.
    public func usage(sinceUs: UInt64 = 0, method: String? = nil) throws -> [MethodUsage] {
        try database.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT method, COUNT(*) AS invocations, TOTAL(exec_us) AS exec_us, TOTAL(memory_mb * exec_us) AS mb_us,
                       TOTAL(usage_cpu_us) AS cpu_us, COUNT(usage_cpu_us) AS measured,
                       TOTAL(usage_host_cpu_us) AS host_cpu_us, COUNT(usage_host_cpu_us) AS host_measured,
                       MAX(usage_peak_memory_kb) AS peak_kb, TOTAL(usage_bytes_in) AS bytes_in, COUNT(usage_bytes_in) AS in_measured,
                       TOTAL(usage_bytes_out) AS bytes_out, COUNT(usage_bytes_out) AS out_measured
                FROM execution WHERE recorded_at_us >= ? AND (? IS NULL OR method = ?)
                GROUP BY method ORDER BY method
                """, arguments: [Int64(clamping: sinceUs), method, method])
            // TOTAL sums as a double, so no sum of stored numbers can overflow; a sum of nothing
            // measured is nil, not 0.
            func measured(_ row: Row, _ column: String, _ count: String) -> Double? {
                (row[count] as Int) > 0 ? row[column] as Double : nil
            }
            return rows.map { row in
                MethodUsage(
                    method: row["method"], invocations: row["invocations"], execSeconds: (row["exec_us"] as Double) / 1e6,
                    gbSeconds: (row["mb_us"] as Double) / 1_024 / 1e6, cpuSeconds: measured(row, "cpu_us", "measured").map { $0 / 1e6 },
                    hostCPUSeconds: measured(row, "host_cpu_us", "host_measured").map { $0 / 1e6 }, measuredInvocations: row["measured"],
                    peakMemoryKB: row["peak_kb"], bytesIn: measured(row, "bytes_in", "in_measured").map { UInt64(min($0, 1.8e19)) },
                    bytesOut: measured(row, "bytes_out", "out_measured").map { UInt64(min($0, 1.8e19)) })
            }
        }
    }
}

/// What one method's invocations consumed, as a pay-per-use bill counts it.
public struct MethodUsage: Sendable, Equatable {
    public var method: String
    /// Runs recorded, redeliveries included.
    public var invocations: Int
    /// Time spent running in VMs.
    public var execSeconds: Double
    /// The VM's memory (the profile's) times the time run, in GiB-seconds, as Lambda bills it.
    public var gbSeconds: Double
    /// The methods' own CPU time in their guests; nil when no record measured it.
    public var cpuSeconds: Double?
    /// The CPU time their VMs used on the host while they ran; nil when no record measured it.
    public var hostCPUSeconds: Double?
    /// Runs whose guest CPU time was measured (records made before usage was kept have none).
    public var measuredInvocations: Int
    /// The highest peak resident memory of a run, KiB.
    public var peakMemoryKB: UInt64?
    public var bytesIn: UInt64?
    public var bytesOut: UInt64?

    public init(
        method: String, invocations: Int, execSeconds: Double, gbSeconds: Double, cpuSeconds: Double? = nil, hostCPUSeconds: Double? = nil,
        measuredInvocations: Int = 0, peakMemoryKB: UInt64? = nil, bytesIn: UInt64? = nil, bytesOut: UInt64? = nil
    ) {
        self.method = method
        self.invocations = invocations
        self.execSeconds = execSeconds
        self.gbSeconds = gbSeconds
        self.cpuSeconds = cpuSeconds
        self.hostCPUSeconds = hostCPUSeconds
        self.measuredInvocations = measuredInvocations
        self.peakMemoryKB = peakMemoryKB
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
    }
}

/// What replaying a history into a model used and what it skipped.
public struct HistoryReplay: Sendable, Equatable {
    /// Records learned.
    public var replayed = 0
    /// Records of another feature schema (an older or newer Kiln wrote them).
    public var otherSchema = 0
    /// Records holding a number that is not finite.
    public var notFinite = 0

    /// Whether a model may learn from `record` (of the current feature schema, every number
    /// finite), counting it either way.
    public mutating func admit(_ record: ExecutionRecord) -> Bool {
        guard record.featureSchema == ExecutionRecord.currentSchema else {
            otherSchema += 1
            return false
        }
        guard record.isFinite else {
            notFinite += 1
            return false
        }
        replayed += 1
        return true
    }

    /// The records a model may learn from, and what was left out.
    public static func usable(_ records: [ExecutionRecord]) -> (records: [ExecutionRecord], summary: HistoryReplay) {
        var summary = HistoryReplay()
        let usable = records.filter { summary.admit($0) }
        return (usable, summary)
    }

    /// Replays the usable `records`, oldest first, into `predictor`.
    public static func replay(_ records: [ExecutionRecord], into predictor: any LatencyPredictor) -> HistoryReplay {
        var summary = HistoryReplay()
        for record in records where summary.admit(record) { predictor.observe(record.outcome) }
        predictor.historyReplayed()
        return summary
    }

    /// Replays `history`, oldest first, a page at a time, into `predictor`.
    public static func replay(_ history: ExecutionHistory, into predictor: any LatencyPredictor) throws -> HistoryReplay {
        var summary = HistoryReplay()
        try history.forEach { record in
            if summary.admit(record) { predictor.observe(record.outcome) }
        }
        predictor.historyReplayed()
        return summary
    }

    /// One line for the log: `replayed 480 records; skipped 20 of feature schema 1 and 0 with non-finite numbers`.
    public var description: String {
        "replayed \(replayed) records; skipped \(otherSchema) of another feature schema and \(notFinite) with numbers that are not finite"
    }
}

/// The table row: an ``ExecutionRecord`` with its row id.
private struct StoredRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "execution"
    var id: Int64?
    var record: ExecutionRecord

    init(_ record: ExecutionRecord) {
        self.record = record
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: IDKey.self)
        id = try container.decodeIfPresent(Int64.self, forKey: .id)
        record = try ExecutionRecord(from: decoder)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: IDKey.self)
        try container.encodeIfPresent(id, forKey: .id)
        try record.encode(to: encoder)
    }

    enum IDKey: String, CodingKey {
        case id
    }
}

extension Duration {
    var inWholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }
}
