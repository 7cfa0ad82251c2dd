import Foundation
import KilnVM
import KilnWire
import Yams

extension WorkerConfiguration {
    /// Loads `file` (YAML; `nil` for defaults only), applies `KILN_*` variables from
    /// `environment`, and validates the result.
    public static func load(file: String?, environment: [String: String]) throws -> WorkerConfiguration {
        var tree: [String: Any] = [:]
        if let file {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw ConfigurationError(field: "(file)", problem: "cannot read \(file): \(error.localizedDescription)")
            }
            do {
                guard let loaded = try Yams.load(yaml: text) else { return try validated(decode([:])) }
                guard let map = loaded as? [String: Any] else {
                    throw ConfigurationError(field: "(file)", problem: "\(file) is not a YAML mapping")
                }
                tree = map
            } catch let error as ConfigurationError {
                throw error
            } catch {
                throw ConfigurationError(field: "(file)", problem: "\(file) is not valid YAML: \(error)")
            }
        }
        for (name, value) in environment where name.hasPrefix("KILN_") {
            try applyOverride(name: name, value: value, to: &tree)
        }
        return try validated(decode(tree))
    }

    /// Sets the field a `KILN_*` variable names, read as the type of that field's default
    /// (`KILN_WORKER_NAME=42` is the name "42"). Variables that name no field are left alone
    /// here; ``environmentWarnings(_:)`` reports them.
    private static func applyOverride(name: String, value: String, to tree: inout [String: Any]) throws {
        guard let (section, key, field) = settableField(named: name) else { return }
        var map = tree[section] as? [String: Any] ?? [:]
        map[key] = typed(value, like: field)
        tree[section] = map
    }

    /// The section, key and default of the field a `KILN_SECTION_KEY` variable sets, if any.
    private static func settableField(named variable: String) -> (section: String, key: String, default: Any)? {
        let words = variable.dropFirst("KILN_".count).lowercased().split(separator: "_").map(String.init)
        guard let section = words.first, words.count > 1,
              let fields = defaultTree[section] as? [String: Any] else { return nil }
        let key = words.dropFirst().joined(separator: "_")
        guard let field = fields[key], !(field is [String: Any]), !(field is [Any]) else { return nil }
        return (section, key, field)
    }

    /// Every variable that sets a field: `KILN_AMQP_URL`, `KILN_POOL_MEMORY_RESERVE_MB`, …
    public static var settableVariables: [String] {
        defaultTree.flatMap { section, fields -> [String] in
            guard let fields = fields as? [String: Any] else { return [] }
            return fields.compactMap { key, value in
                value is [String: Any] || value is [Any] ? nil : "KILN_\(section)_\(key)".uppercased()
            }
        }.sorted()
    }

    /// `KILN_*` variables Kiln reads that set no configuration field: the configuration file, the
    /// log level, the local broker's script, the test image and run folder.
    static let otherVariables: Set<String> = ["KILN_CONFIG", "KILN_LOG_LEVEL", "KILN_AMQP_PORT", "KILN_AMQPS_PORT",
                                              "KILN_AMQP_TLS_URL", "KILN_IMAGE", "KILN_RUN_DIR", "KILN_BINARY"]
    /// Prefixes of variables for the local broker, the tests and the benchmarks.
    static let otherVariablePrefixes = ["KILN_RABBITMQ_", "KILN_TEST_", "KILN_INTEROP_", "KILN_BENCH_"]

    /// One line for each `KILN_*` variable in `environment` that Kiln does not read, with the
    /// variable it most likely meant (`KILN_AMQP_URLL`: did you mean KILN_AMQP_URL?), and for
    /// each that names a field the environment cannot set (a profile's fields). Commands print
    /// these as warnings: a typo would otherwise leave a default in place unseen.
    public static func environmentWarnings(_ environment: [String: String]) -> [String] {
        let known = settableVariables
        return environment.keys.filter { $0.hasPrefix("KILN_") }.sorted().compactMap { name in
            if settableField(named: name) != nil || otherVariables.contains(name)
                || otherVariablePrefixes.contains(where: name.hasPrefix) {
                return nil
            }
            // Profiles and per-method lifecycles are mappings of names: only the file holds them.
            if let section = ["profiles", "method_lifecycles"].first(where: { name.lowercased().hasPrefix("kiln_\($0)_") }) {
                return "\(name.prefix(80)) cannot be set from the environment: set \(section) in the configuration file"
            }
            return "\(name.prefix(80)) is not a Kiln variable\(ClosestName.hint(for: name, among: known + otherVariables)); it is ignored"
        }
    }

    /// The defaults as the decoder sees them: sections, their keys (the coding keys) and values.
    private static var defaultTree: [String: Any] {
        (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(WorkerConfiguration()))) as? [String: Any] ?? [:]
    }

    /// `text` as the type of `example` (a default decoded from JSON): text for a text field
    /// whatever it looks like, else a number or a truth value where it reads as one; left as
    /// text otherwise, so that the decoder names the field and the type it expected.
    private static func typed(_ text: String, like example: Any) -> Any {
        if example is String { return text }
        if let int = Int(text) { return int }
        if let double = Double(text) { return double }
        if text == "true" || text == "false" { return text == "true" }
        return text
    }

    /// Decodes `tree` laid over the defaults: a missing field keeps its default, an unknown one
    /// is an error (it is usually a typo).
    private static func decode(_ tree: [String: Any]) throws -> WorkerConfiguration {
        let defaults = defaultTree
        let profileDefaults = try JSONSerialization.jsonObject(with: JSONEncoder().encode(Profile())) as! [String: Any]
        // A method's lifecycle starts from the configured `lifecycle` section, not the built-in one.
        var lifecycleDefaults = defaults["lifecycle"] as! [String: Any]
        if let configured = tree["lifecycle"] {
            lifecycleDefaults = try overlay(configured, on: lifecycleDefaults, path: "lifecycle")
        }
        var tree = tree
        // amqp.url may list a cluster's nodes; the field holds them separated by commas.
        if var amqp = tree["amqp"] as? [String: Any], let urls = amqp["url"] as? [Any] {
            amqp["url"] = urls.map { "\($0)" }.joined(separator: ",")
            tree["amqp"] = amqp
        }
        var merged = defaults
        for (key, value) in tree {
            guard let base = defaults[key] else {
                throw ConfigurationError(field: key, problem: "is not a configuration section" + ClosestName.hint(for: key, among: defaults.keys))
            }
            switch key {
            case "profiles", "method_lifecycles":
                guard let entries = value as? [String: Any] else {
                    throw ConfigurationError(field: key, problem: "expected a mapping of names to settings")
                }
                let entryDefaults = key == "profiles" ? profileDefaults : lifecycleDefaults
                var overlaid: [String: Any] = [:]
                for (name, entry) in entries {
                    overlaid[name] = try overlay(entry, on: entryDefaults, path: "\(key).\(name)")
                }
                merged[key] = overlaid
            default:
                merged[key] = base is [String: Any] ? try overlay(value, on: base as! [String: Any], path: key) : value
            }
        }
        let data = try JSONSerialization.data(withJSONObject: merged)
        do {
            return try JSONDecoder().decode(WorkerConfiguration.self, from: data)
        } catch let DecodingError.typeMismatch(type, context) {
            throw ConfigurationError(field: context.codingPath.map(\.stringValue).joined(separator: "."), problem: "expected \(readable(type))")
        } catch let DecodingError.valueNotFound(type, context) {
            throw ConfigurationError(field: context.codingPath.map(\.stringValue).joined(separator: "."), problem: "expected \(readable(type))")
        } catch let DecodingError.dataCorrupted(context) {
            throw ConfigurationError(field: context.codingPath.map(\.stringValue).joined(separator: "."), problem: context.debugDescription)
        }
    }

    private static func overlay(_ value: Any, on defaults: [String: Any], path: String) throws -> [String: Any] {
        guard let map = value as? [String: Any] else {
            throw ConfigurationError(field: path, problem: "expected a mapping")
        }
        var merged = defaults
        for (key, field) in map {
            if let retired = retiredSettings["\(path).\(key)"] {
                throw ConfigurationError(field: "\(path).\(key)", problem: retired)
            }
            guard defaults.keys.contains(key) else {
                throw ConfigurationError(field: "\(path).\(key)", problem: "is not a known setting" + ClosestName.hint(for: key, among: defaults.keys))
            }
            merged[key] = field
        }
        return merged
    }

    /// Settings earlier versions read, and what to do instead.
    private static let retiredSettings = [
        "vm.manifest": "is no longer read: a worker runs the methods of its image (vm.image), which `kiln image build --manifest` builds from the manifest; remove the line",
    ]

    private static func readable(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "a whole number"
        case is Double.Type: return "a number"
        case is String.Type: return "text"
        case is Bool.Type: return "true or false"
        default: return "a \(type)"
        }
    }

    private static func validated(_ configuration: WorkerConfiguration) throws -> WorkerConfiguration {
        func require(_ condition: Bool, _ field: String, _ problem: String) throws {
            if !condition { throw ConfigurationError(field: field, problem: problem) }
        }
        let urls = configuration.amqp.url.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        try require(!urls.isEmpty && urls.allSatisfy { $0.hasPrefix("amqp://") || $0.hasPrefix("amqps://") },
                    "amqp.url", "must be amqp:// or amqps:// URLs (a cluster's nodes as a list, or separated by commas)")
        try require(!configuration.amqp.prefix.isEmpty, "amqp.prefix", "must not be empty")
        try require((0...65_535).contains(configuration.amqp.prefetch), "amqp.prefetch", "must be 0 (automatic) to 65535")
        try require(configuration.amqp.publishWindow >= 1, "amqp.publish_window", "must be at least 1")
        try require(configuration.amqp.deliveryLimit >= 1, "amqp.delivery_limit", "must be at least 1")
        try require(!configuration.profiles.isEmpty, "profiles", "needs at least one profile")
        for (name, profile) in configuration.profiles {
            try require(profile.vcpus >= 1, "profiles.\(name).vcpus", "must be at least 1")
            try require((64...1_048_576).contains(profile.memoryMB), "profiles.\(name).memory_mb", "must be 64 to 1048576")
            try require(profile.maxMemoryMB == 0 || (profile.memoryMB...min(16 * profile.memoryMB, 1_048_576)).contains(profile.maxMemoryMB),
                        "profiles.\(name).max_memory_mb", "must be 0 (the default) or from memory_mb to 16 x memory_mb")
            try require(profile.maxMemoryMB == 0 || configuration.adaptive.enabled, "profiles.\(name).max_memory_mb",
                        "needs adaptive.enabled: without the allocator nothing gives a VM more memory")
            try require(profile.minIdle >= 0, "profiles.\(name).min_idle", "must not be negative")
            try require(profile.maxIdle >= profile.minIdle, "profiles.\(name).max_idle", "must be at least min_idle")
            try require(profile.maxTotal >= max(1, profile.minIdle), "profiles.\(name).max_total", "must be at least 1 and at least min_idle")
            try require(profile.cpuShare >= 0, "profiles.\(name).cpu_share", "must not be negative")
        }
        try require(configuration.pool.memoryReserveMB >= 0, "pool.memory_reserve_mb", "must not be negative")
        try require(configuration.pool.sizingIntervalSeconds > 0, "pool.sizing_interval_s", "must be positive")
        try require(configuration.pool.provisionConcurrency >= 1, "pool.provision_concurrency", "must be at least 1")
        try require(configuration.pool.saturatedBusyLimit >= 0, "pool.saturated_busy_limit", "must not be negative (0: one per host core)")
        for (name, lifecycle) in [("lifecycle", configuration.lifecycle)] + configuration.methodLifecycles.map({ ("method_lifecycles.\($0.key)", $0.value) }) {
            try require(lifecycle.maxUses >= 1, "\(name).max_uses", "must be at least 1")
            try require(lifecycle.idleTTLSeconds >= 0, "\(name).idle_ttl_s", "must not be negative")
            try require(lifecycle.idleTTLSeconds <= 2_592_000, "\(name).idle_ttl_s", "must be at most 2592000 (30 days)")
        }
        try require(configuration.adaptive.degradationRatio > 1, "adaptive.degradation_ratio", "must be above 1")
        try require(configuration.adaptive.sustained >= 1, "adaptive.sustained", "must be at least 1")
        try require(configuration.adaptive.cpuStep > 0, "adaptive.cpu_step", "must be positive")
        try require((0...86_400).contains(configuration.adaptive.relaxAfterSeconds), "adaptive.relax_after_s", "must be 0 to 86400")
        try require((100...600_000).contains(configuration.affinity.holdMs), "affinity.hold_ms", "must be 100 to 600000")
        // It ends telemetry routing keys and names the worker's affinity queue.
        try require(configuration.worker.host.utf8.count <= 100 && configuration.worker.host.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) },
                    "worker.host", "must be at most 100 letters, digits, '-', '_' or '.'")
        try require(configuration.history.maxRecords >= 100, "history.max_records", "must be at least 100")
        try require(configuration.history.maxAgeDays > 0, "history.max_age_days", "must be positive")
        try require((1...GuestFrame.ExecBatch.maxCalls).contains(configuration.pool.batchCalls), "pool.batch_calls",
                    "must be 1 to \(GuestFrame.ExecBatch.maxCalls)")
        try require((1...60_000).contains(configuration.pool.batchWindowMs), "pool.batch_window_ms", "must be 1 to 60000")
        try require(configuration.limits.localQueue >= 0, "limits.local_queue", "must not be negative")
        try require(configuration.limits.maxBodyBytes >= 1_024, "limits.max_body_bytes", "must be at least 1024")
        try require((1...31).contains(configuration.limits.maxDepth), "limits.max_depth", "must be 1 to 31")
        try require((1...86_400_000).contains(configuration.limits.maxDeadlineMs), "limits.max_deadline_ms", "must be 1 to 86400000 (a day)")
        if !configuration.metrics.listen.isEmpty {
            try require(HostAndPort(configuration.metrics.listen) != nil, "metrics.listen", "must be host:port, not \(configuration.metrics.listen)")
        }
        return configuration
    }
}

/// `host:port`.
public struct HostAndPort: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65_535).contains(port) else { return nil }
        host = String(text[..<colon])
        self.port = port
        if host.isEmpty { host = "0.0.0.0" }
    }
}
