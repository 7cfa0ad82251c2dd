import Foundation
import KilnWire

/// A method manifest: which methods a guest image carries, how each is started (`mode`: a program
/// per call, or a runtime that stays up), its default deadline, VM lifecycle and resources. JSON,
/// read by the image builder, by the worker and (in its MessagePack twin) by the guest agent.
///
/// ```json
/// {
///   "version": 1,
///   "programs": { "kiln-examples": "swift:kiln-examples" },
///   "methods": {
///     "echo":  { "entry": ["kiln-examples", "echo"], "deadline_ms": 5000 },
///     "wordcount": { "entry": ["kiln-examples", "wordcount"], "mode": "serve", "warm": true },
///     "sleep": { "entry": ["kiln-examples", "sleep"], "deadline_ms": 10000, "lifecycle": "fresh",
///                "resources": { "vcpus": 1, "memory_mb": 128 } },
///     "resize": { "entry": ["/usr/bin/python3", "/app/resize.py"],
///                 "dependencies": { "runtime": "python3", "files": ["/app/weights.bin"], "size_mb": 60 } },
///     "noop":  { "entry": ["kiln:noop"] }
///   }
/// }
/// ```
///
/// `programs` maps a program name to a host file (relative to the manifest's folder), or to
/// `swift:<product>`, a SwiftPM product the image builder compiles (see ``ProgramSource``); the
/// image holds it as `/kiln/bin/<name>`. An entry's first element names a program, is an absolute
/// path inside the guest (`/bin/sh`), or names an agent builtin (`kiln:noop`).
public struct MethodManifest: Codable, Sendable, Equatable {
    /// The format version; 1.
    public var version: Int
    /// Program name → host path.
    public var programs: [String: String]
    /// Method name → how to run it.
    public var methods: [String: Method]
    /// Root file systems by name (see ``RootFilesystemSpec``).
    public var rootFilesystems: [String: RootFilesystemSpec]
    /// The root file system of every method that names none; nil: they run in the initramfs.
    public var rootfs: String?

    /// Where programs live inside the guest.
    public static let guestProgramFolder = "/kiln/bin"

    public init(version: Int = 1, programs: [String: String], methods: [String: Method],
                rootFilesystems: [String: RootFilesystemSpec] = [:], rootfs: String? = nil) {
        self.version = version
        self.programs = programs
        self.methods = methods
        self.rootFilesystems = rootFilesystems
        self.rootfs = rootfs
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case version, programs, methods
        case rootFilesystems = "root_filesystems"
        case rootfs
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        version = try container.decode(Int.self, forKey: .version)
        programs = try container.decode([String: String].self, forKey: .programs)
        methods = try container.decode([String: Method].self, forKey: .methods)
        rootFilesystems = try container.decodeIfPresent([String: RootFilesystemSpec].self, forKey: .rootFilesystems) ?? [:]
        rootfs = try container.decodeIfPresent(String.self, forKey: .rootfs)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(version, forKey: .version)
        try container.encode(programs, forKey: .programs)
        try container.encode(methods, forKey: .methods)
        if !rootFilesystems.isEmpty { try container.encode(rootFilesystems, forKey: .rootFilesystems) }
        try container.encodeIfPresent(rootfs, forKey: .rootfs)
    }

    /// The root file system `method` runs on: its own, else the manifest's; nil for the initramfs.
    public func rootfs(of method: String) -> String? {
        guard let entry = methods[method] else { return nil }
        return entry.rootfs ?? rootfs
    }

    /// One method.
    public struct Method: Codable, Sendable, Equatable {
        /// argv: a program name from `programs` (or an absolute guest path, or on a root file
        /// system a name on its PATH) and its arguments. Empty on an OCI image's root file
        /// system: the image's Entrypoint and Cmd.
        public var entry: [String]
        /// The deadline when an invocation gives none.
        public var deadlineMs: UInt64
        /// How the program runs: once per call, or as a runtime that stays up.
        public var mode: Mode
        /// Serve mode only: start the runtime when the VM starts (so a snapshot template holds it
        /// running), not at the first call.
        public var warm: Bool
        /// What happens to the VM after an invocation.
        public var lifecycle: Lifecycle
        /// The VM profile the method needs.
        public var resources: Resources
        /// What it needs beyond its code; the latency model predicts it slower on a VM that has
        /// not loaded them yet.
        public var dependencies: Dependencies
        /// The root file system it runs on (a name in `root_filesystems`); nil: the manifest's.
        public var rootfs: String?

        public init(
            entry: [String], deadlineMs: UInt64 = 30_000, mode: Mode = .exec, warm: Bool = false,
            lifecycle: Lifecycle = .reuse, resources: Resources = .init(), dependencies: Dependencies = .init(),
            rootfs: String? = nil
        ) {
            self.entry = entry
            self.deadlineMs = deadlineMs
            self.mode = mode
            self.warm = warm
            self.lifecycle = lifecycle
            self.resources = resources
            self.dependencies = dependencies
            self.rootfs = rootfs
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case entry
            case deadlineMs = "deadline_ms"
            case mode, warm, lifecycle, resources, dependencies, rootfs
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            entry = try container.decodeIfPresent([String].self, forKey: .entry) ?? []
            deadlineMs = try container.decodeIfPresent(UInt64.self, forKey: .deadlineMs) ?? 30_000
            mode = try container.decodeIfPresent(Mode.self, forKey: .mode) ?? .exec
            warm = try container.decodeIfPresent(Bool.self, forKey: .warm) ?? false
            lifecycle = try container.decodeIfPresent(Lifecycle.self, forKey: .lifecycle) ?? .reuse
            resources = try container.decodeIfPresent(Resources.self, forKey: .resources) ?? .init()
            dependencies = try container.decodeIfPresent(Dependencies.self, forKey: .dependencies) ?? .init()
            rootfs = try container.decodeIfPresent(String.self, forKey: .rootfs)
        }
    }

    /// What a method needs beyond its code: the runtime (or root filesystem) it runs on, the
    /// files it reads, and how large they are. A VM that ran a method with the same runtime or
    /// files has them loaded (its page cache, a runtime's imports); one that did not pays for
    /// loading them, which the latency model learns per MiB.
    public struct Dependencies: Codable, Sendable, Equatable {
        /// The runtime or root filesystem, e.g. `python3`.
        public var runtime: String?
        /// Files read beyond the code, as absolute guest paths.
        public var files: [String]
        /// The size of the runtime and files together, MiB (a hint).
        public var sizeMB: Int

        public init(runtime: String? = nil, files: [String] = [], sizeMB: Int = 0) {
            self.runtime = runtime
            self.files = files
            self.sizeMB = sizeMB
        }

        /// The names a VM that loaded them is known by: `runtime:<name>` and `file:<path>`.
        public var names: Set<String> {
            Set((runtime.map { ["runtime:" + $0] } ?? []) + files.map { "file:" + $0 })
        }

        /// Whether the method declares none.
        public var isEmpty: Bool { runtime == nil && files.isEmpty && sizeMB == 0 }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case runtime, files
            case sizeMB = "size_mb"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            runtime = try container.decodeIfPresent(String.self, forKey: .runtime)
            files = try container.decodeIfPresent([String].self, forKey: .files) ?? []
            sizeMB = try container.decodeIfPresent(Int.self, forKey: .sizeMB) ?? 0
        }

        /// Checks sizes and names; `at` names the method in errors.
        func validate(path: String, at method: String) throws(VMError) {
            if let runtime, !MethodManifest.isPlainName(runtime) || runtime.utf8.count > 64 {
                throw .manifestInvalid(path: path, reason: "methods.\(method).dependencies.runtime must be 1–64 letters, digits, '-', '_' or '.'")
            }
            guard files.count <= 64 else {
                throw .manifestInvalid(path: path, reason: "methods.\(method).dependencies.files: at most 64 files")
            }
            for file in files where !file.hasPrefix("/") || file.utf8.count > 512 || file.contains(where: { $0.isNewline || $0 == "\0" }) {
                throw .manifestInvalid(path: path, reason: "methods.\(method).dependencies.files: '\(file.prefix(80))' must be an absolute guest path of at most 512 bytes")
            }
            guard (0...1_048_576).contains(sizeMB) else {
                throw .manifestInvalid(path: path, reason: "methods.\(method).dependencies.size_mb must be 0–1048576")
            }
        }
    }

    /// How a method's program runs inside the guest.
    public enum Mode: String, Codable, Sendable, Equatable {
        /// The agent starts the program for every call: the request on stdin, the answer on stdout.
        case exec
        /// The agent starts the program once per VM and streams calls to it as frames over its
        /// stdin and stdout (see `ServeCall` in KilnWire).
        case serve

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            if let mode = Mode(rawValue: text) {
                self = mode
            } else if Lifecycle(rawValue: text) != nil {
                throw DecodingError.dataCorrupted(.init(
                    codingPath: decoder.codingPath,
                    debugDescription: "mode '\(text)' is a VM lifecycle since manifests gained serve mode: write \"lifecycle\": \"\(text)\" (mode is exec or serve)"))
            } else {
                throw DecodingError.dataCorrupted(.init(
                    codingPath: decoder.codingPath, debugDescription: "mode '\(text)' is not exec or serve"))
            }
        }
    }

    /// The VM lifecycle of a method.
    public enum Lifecycle: String, Codable, Sendable, Equatable {
        /// The VM is reset (processes killed, scratch wiped) and reused.
        case reuse
        /// The VM is destroyed after one invocation.
        case fresh
    }

    /// The resources a method's VM gets.
    public struct Resources: Codable, Sendable, Equatable {
        public var vcpus: Int
        public var memoryMB: Int

        public init(vcpus: Int = 1, memoryMB: Int = 128) {
            self.vcpus = vcpus
            self.memoryMB = memoryMB
        }

        /// The VM profile these resources call for, named `<vcpus>c<memory>m`.
        public var profile: VMProfile {
            VMProfile(name: "\(vcpus)c\(memoryMB)m", vcpus: vcpus, memoryMB: memoryMB)
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case vcpus
            case memoryMB = "memory_mb"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            vcpus = try container.decodeIfPresent(Int.self, forKey: .vcpus) ?? 1
            memoryMB = try container.decodeIfPresent(Int.self, forKey: .memoryMB) ?? 128
        }
    }

    /// Parses and checks a manifest; `path` names it in errors. A syntax error says its line and
    /// column; a key the manifest does not know is an error (a typo such as `deadine_ms` would
    /// otherwise fall back to a default unseen), with the key it most likely meant.
    public static func parse(_ data: Data, path: String = "manifest") throws(VMError) -> MethodManifest {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw .manifestInvalid(path: path, reason: "not valid JSON" + (JSONSyntaxError.location(of: error, in: data).map { " at \($0)" } ?? ""))
        }
        try rejectUnknownKeys(in: object, path: path)
        let manifest: MethodManifest
        do {
            manifest = try JSONDecoder().decode(MethodManifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            let at = (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            throw .manifestInvalid(path: path, reason: "missing key \(at)")
        } catch let DecodingError.typeMismatch(type, context) {
            throw .manifestInvalid(path: path, reason: "\(context.codingPath.map(\.stringValue).joined(separator: ".")) must be \(type)")
        } catch let DecodingError.dataCorrupted(context) {
            throw .manifestInvalid(path: path, reason: "\(context.debugDescription) at \(context.codingPath.map(\.stringValue).joined(separator: "."))")
        } catch {
            throw .manifestInvalid(path: path, reason: "\(error)")
        }
        try manifest.validate(path: path)
        return manifest
    }

    /// Throws for the first key, in the manifest or in a method, that no field of ours decodes.
    private static func rejectUnknownKeys(in object: Any, path: String) throws(VMError) {
        guard let manifest = object as? [String: Any] else {
            throw .manifestInvalid(path: path, reason: "the manifest must be a JSON object")
        }
        try requireKnownKeys(manifest, CodingKeys.self, at: "", path: path)
        // Values of the wrong type are left to the decoder, which names the type it expected.
        for (name, method) in (manifest["methods"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let method = method as? [String: Any] else { continue }
            let at = "methods.\(name.prefix(80))."
            try requireKnownKeys(method, Method.CodingKeys.self, at: at, path: path)
            if let resources = method["resources"] as? [String: Any] {
                try requireKnownKeys(resources, Resources.CodingKeys.self, at: at + "resources.", path: path)
            }
            if let dependencies = method["dependencies"] as? [String: Any] {
                try requireKnownKeys(dependencies, Dependencies.CodingKeys.self, at: at + "dependencies.", path: path)
            }
        }
        for (name, spec) in (manifest["root_filesystems"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let spec = spec as? [String: Any] else { continue }
            let at = "root_filesystems.\(name.prefix(80))."
            try requireKnownKeys(spec, RootFilesystemSpec.CodingKeys.self, at: at, path: path)
            if let debian = spec["debian"] as? [String: Any] {
                try requireKnownKeys(debian, RootFilesystemSpec.DebianPackages.CodingKeys.self, at: at + "debian.", path: path)
            }
        }
    }

    private static func requireKnownKeys<Keys: CodingKey & CaseIterable>(
        _ map: [String: Any], _: Keys.Type, at prefix: String, path: String
    ) throws(VMError) {
        let known = Keys.allCases.map(\.stringValue)
        for key in map.keys.sorted() where !known.contains(key) {
            throw .manifestInvalid(path: path, reason: "\(prefix)\(key.prefix(80)) is not a manifest key\(ClosestName.hint(for: key, among: known)); "
                + "\(prefix.isEmpty ? "a manifest" : String(prefix.dropLast())) takes \(known.joined(separator: ", "))")
        }
    }

    /// Reads and checks the manifest at `path`.
    public static func load(path: String) throws(VMError) -> MethodManifest {
        guard let bytes = readFile(path) else {
            throw .manifestInvalid(path: path, reason: "cannot read the file")
        }
        return try parse(Data(bytes), path: path)
    }

    /// Checks names, entries and resources.
    public func validate(path: String = "manifest") throws(VMError) {
        guard version == 1 else { throw .manifestInvalid(path: path, reason: "version \(version) is not 1") }
        guard !methods.isEmpty else { throw .manifestInvalid(path: path, reason: "no methods") }
        for name in programs.keys where !Self.isPlainName(name) {
            throw .manifestInvalid(path: path, reason: "program name '\(name)' must be letters, digits, '-', '_' or '.'")
        }
        for (name, spec) in rootFilesystems.sorted(by: { $0.key < $1.key }) {
            try spec.validate(name: name, path: path)
        }
        if let rootfs, rootFilesystems[rootfs] == nil {
            throw .manifestInvalid(path: path, reason: "rootfs '\(rootfs.prefix(80))' is not in root_filesystems\(ClosestName.hint(for: rootfs, among: rootFilesystems.keys))")
        }
        for (name, method) in methods.sorted(by: { $0.key < $1.key }) {
            guard Invocation.isMethodName(name) else {
                throw .manifestInvalid(path: path, reason: "method name '\(name.prefix(80))' must be 1–\(Invocation.maxMethodBytes) letters, digits, '-', '_' or '.'")
            }
            if let own = method.rootfs, rootFilesystems[own] == nil {
                throw .manifestInvalid(path: path, reason: "methods.\(name).rootfs '\(own.prefix(80))' is not in root_filesystems\(ClosestName.hint(for: own, among: rootFilesystems.keys))")
            }
            let rootfs = rootfs(of: name)
            guard let program = method.entry.first, !program.isEmpty else {
                // An OCI image's own Entrypoint and Cmd start it.
                if let rootfs, case .oci = rootFilesystems[rootfs]?.source, method.entry.isEmpty { continue }
                throw .manifestInvalid(path: path, reason: "methods.\(name).entry is empty")
            }
            if program.hasPrefix(Self.builtinPrefix) {
                guard Self.builtins.contains(program) else {
                    throw .manifestInvalid(path: path, reason: "methods.\(name).entry names builtin '\(program)'; the agent has \(Self.builtins.sorted().joined(separator: ", "))")
                }
            } else if !program.hasPrefix("/") && programs[program] == nil && rootfs == nil {
                throw .manifestInvalid(path: path, reason: "methods.\(name).entry names program '\(program)', which is not in programs")
            }
            guard !method.warm || method.mode == .serve else {
                throw .manifestInvalid(path: path, reason: "methods.\(name).warm needs \"mode\": \"serve\" (only a runtime that stays up can be started ahead)")
            }
            guard method.deadlineMs > 0 else {
                throw .manifestInvalid(path: path, reason: "methods.\(name).deadline_ms must be positive")
            }
            guard (1...64).contains(method.resources.vcpus), (32...65_536).contains(method.resources.memoryMB) else {
                throw .manifestInvalid(path: path, reason: "methods.\(name).resources: vcpus 1–64, memory_mb 32–65536")
            }
            try method.dependencies.validate(path: path, at: name)
        }
    }

    /// Entries that start with this name an agent builtin, not a program.
    public static let builtinPrefix = "kiln:"
    /// The agent's builtins: `kiln:noop` answers at once without starting anything (it measures the
    /// platform's own overhead).
    public static let builtins: Set<String> = ["kiln:noop"]

    /// The argv of `method` inside the guest: program names resolved to `/kiln/bin/<name>`
    /// (absolute paths and builtins stay as they are).
    public func guestEntry(for method: String) -> [String]? {
        guard let entry = methods[method]?.entry, let program = entry.first else { return nil }
        let resolved = program.hasPrefix("/") || program.hasPrefix(Self.builtinPrefix)
            ? program : Self.guestProgramFolder + "/" + program
        return [resolved] + entry.dropFirst()
    }

    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }
}
