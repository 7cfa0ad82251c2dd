import Glibc
import KilnWire

/// What the agent knows of the image's methods, from the manifest's MessagePack twin
/// (`/kiln/methods.msgpack`, written by the image builder): which run in serve mode, which start
/// warm, and their entries inside the guest. A method it does not know runs in exec mode, with the
/// entry the host sends.
struct MethodTable {
    /// One method.
    struct Method: Equatable {
        var serve: Bool
        var warm: Bool
        /// argv inside the guest: program names resolved to their guest paths.
        var entry: [String]
        /// The root file system it runs on; nil: the agent's own.
        var rootfs: String? = nil
        /// The memory its VM must have (the manifest's `resources.memory_mb`).
        var memoryMB: UInt64 = 128
    }

    private(set) var methods: [String: Method] = [:]

    /// Reads the table at `path`; a missing file is an empty table (every method runs in exec
    /// mode), an unreadable one too, with a line on the console.
    static func load(path: String) -> MethodTable {
        // The image's table: a few KiB for a few hundred methods; 16 MiB is far past any.
        guard let bytes = readWholeFile(path, limit: 16 << 20) else { return MethodTable() }
        do {
            return try MethodTable(manifest: MessagePackDecoder().decodeValue(from: bytes))
        } catch {
            AgentLog.write("kiln-agent: \(path) is unreadable (\(error)); every method runs in exec mode")
            return MethodTable()
        }
    }

    init() {}

    /// Reads the guest manifest (`{programs: {name: guest path}, methods: {name: {entry, mode?, warm?}}}`).
    init(manifest: MessagePackValue) throws(WireError) {
        guard case .map(let entries)? = manifest["methods"] else {
            throw .missingKey("methods", path: "")
        }
        for entry in entries {
            guard case .string(let name) = entry.key, case .array(let argv) = entry.value["entry"] ?? .nil else {
                throw .invalidValue("a method without an entry", path: "methods")
            }
            var resolved = argv.compactMap(\.stringValue)
            if let program = resolved.first, !program.hasPrefix("/"), !program.hasPrefix("kiln:") {
                resolved[0] = manifest["programs"]?[program]?.stringValue ?? "/kiln/bin/" + program
            }
            methods[name] = Method(
                serve: entry.value["mode"]?.stringValue == "serve", warm: entry.value["warm"] == .bool(true), entry: resolved,
                rootfs: entry.value["rootfs"]?.stringValue, memoryMB: entry.value["resources"]?["memory_mb"]?.uint64Value ?? 128)
        }
    }

    /// Whether `method` runs as a runtime that stays up.
    func isServe(_ method: String) -> Bool {
        methods[method]?.serve ?? false
    }

    /// Serve-mode methods to start with a VM of `memoryMB`, by name: the warm ones it is large
    /// enough for (a runtime that needs more would not fit beside the others).
    func warm(memoryMB: UInt64) -> [(name: String, entry: [String])] {
        methods.filter { $0.value.serve && $0.value.warm && $0.value.memoryMB <= memoryMB }.sorted { $0.key < $1.key }
            .map { ($0.key, $0.value.entry) }
    }
}
