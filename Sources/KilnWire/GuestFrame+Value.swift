/// Guest frames to and from ``MessagePackValue``, without `Codable`.
///
/// The Codable path (`framed()`, `decode(body:)`) is what the host uses. The agent uses this one:
/// inside a VM under TCG every code path that runs for the first time after a snapshot restore
/// is translated first, and the generic Codable machinery is a lot of code — it made the first
/// frames after a restore ~50 ms slower. Both paths produce and accept the same bytes (the tests
/// hold them to it).
extension GuestFrame {
    /// This frame as a MessagePack map, keys in the order the Codable path writes them.
    public var messagePackValue: MessagePackValue {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [
            (key: "v", value: .uint(1)), (key: "type", value: .string(type)),
        ]
        func add(_ key: String, _ value: MessagePackValue) { entries.append((key: .string(key), value: value)) }
        switch self {
        case .hello(let hello):
            add("agent_version", .string(hello.agentVersion))
            add("uptime_us", .uint(hello.uptimeUs))
            add("vcpus", .uint(UInt64(hello.vcpus)))
            add("memory_mb", .uint(UInt64(hello.memoryMB)))
        case .exec(let exec):
            entries += exec.messagePackEntries
        case .execBatch(let batch):
            add("calls", .array(batch.calls.map { .map($0.messagePackEntries) }))
        case .result(let result):
            add("id", .string(result.id))
            add("status", .string(result.status.rawValue))
            add("output", .binary(result.output))
            add("exit_code", result.exitCode < 0 ? .int(Int64(result.exitCode)) : .uint(UInt64(result.exitCode)))
            add("stderr", .string(result.stderr))
            add("exec_us", .uint(result.execUs))
            add("maxrss_kb", .uint(result.maxrssKB))
            if result.resetPending { add("reset_pending", .bool(true)) }
            if result.crashed { add("crashed", .bool(true)) }
            if result.outOfMemory { add("oom", .bool(true)) }
            if let methodError = result.methodError { add("method_error", .string(methodError)) }
            if result.runtimeStarted { add("runtime_started", .bool(true)) }
            if result.notRun { add("not_run", .bool(true)) }
            if let cpuUs = result.cpuUs { add("cpu_us", .uint(cpuUs)) }
        case .pong(let pong):
            add("uptime_us", .uint(pong.uptimeUs))
            add("load1", .double(pong.load1))
            add("mem_available_kb", .uint(pong.memAvailableKB))
        case .error(let error):
            add("message", .string(error.message))
        case .reset(let reset):
            if reset.keepRuntime { add("keep_runtime", .bool(true)) }
        case .ping, .resetOK, .shutdown:
            break
        }
        return .map(entries)
    }

    /// Reads a frame from a decoded MessagePack map, with the same checks as the Codable path.
    public init(messagePackValue value: MessagePackValue) throws(WireError) {
        let fields = try FrameFields(value)
        let version = try fields.integer("v", Int64.self)
        guard version == 1 else { throw .unsupportedVersion(Int(version)) }
        let type = try fields.string("type")
        switch type {
        case "hello":
            self = .hello(Hello(
                agentVersion: try fields.string("agent_version"), uptimeUs: try fields.integer("uptime_us", UInt64.self),
                vcpus: try fields.integer("vcpus", UInt32.self), memoryMB: try fields.integer("memory_mb", UInt32.self)))
        case "exec":
            self = .exec(try ExecRequest(fields))
        case "exec-batch":
            let calls = try fields.array("calls")
            guard calls.count <= ExecBatch.maxCalls else {
                throw .invalidValue("a batch holds at most \(ExecBatch.maxCalls) calls, not \(calls.count)", path: "calls")
            }
            var requests: [ExecRequest] = []
            requests.reserveCapacity(calls.count)
            for (index, call) in calls.enumerated() {
                guard case .map = call else { throw .typeMismatch(expected: "map", found: call.typeName, path: "calls[\(index)]") }
                requests.append(try ExecRequest(FrameFields(call)))
            }
            self = .execBatch(ExecBatch(calls: requests))
        case "result":
            let statusText = try fields.string("status")
            guard let status = ExecStatus(rawValue: statusText) else {
                throw .invalidValue("unknown exec status '\(statusText)'", path: "status")
            }
            self = .result(ExecResult(
                id: try fields.string("id"), status: status, output: try fields.bytes("output"),
                exitCode: try fields.integer("exit_code", Int32.self), stderr: try fields.string("stderr"),
                execUs: try fields.integer("exec_us", UInt64.self), maxrssKB: try fields.integer("maxrss_kb", UInt64.self),
                resetPending: try fields.optionalBool("reset_pending") ?? false, crashed: try fields.optionalBool("crashed") ?? false,
                outOfMemory: try fields.optionalBool("oom") ?? false, methodError: try fields.optionalString("method_error"),
                runtimeStarted: try fields.optionalBool("runtime_started") ?? false, notRun: try fields.optionalBool("not_run") ?? false,
                cpuUs: try fields.optionalInteger("cpu_us", UInt64.self)))
        case "ping": self = .ping
        case "pong":
            self = .pong(Pong(
                uptimeUs: try fields.integer("uptime_us", UInt64.self), load1: try fields.double("load1"),
                memAvailableKB: try fields.integer("mem_available_kb", UInt64.self)))
        case "reset": self = .reset(Reset(keepRuntime: try fields.optionalBool("keep_runtime") ?? false))
        case "reset-ok": self = .resetOK
        case "shutdown": self = .shutdown
        case "error": self = .error(GuestError(message: try fields.string("message")))
        default: throw .invalidValue("unknown guest frame type '\(type)'", path: "type")
        }
    }

    /// This frame, encoded without Codable and length-prefixed.
    public func valueFramed(encoder: MessagePackEncoder = MessagePackEncoder()) throws(WireError) -> [UInt8] {
        FrameBuffer.frame(try encoder.encode(messagePackValue))
    }

    /// Decodes a frame body without Codable.
    public static func decodeValue(
        body: [UInt8], decoder: MessagePackDecoder = MessagePackDecoder()
    ) throws(WireError) -> GuestFrame {
        try GuestFrame(messagePackValue: decoder.decodeValue(from: body))
    }
}

extension GuestFrame.ExecRequest {
    /// The request's keys, in the order the Codable path writes them.
    fileprivate var messagePackEntries: [(key: MessagePackValue, value: MessagePackValue)] {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [
            (key: "id", value: .string(id)), (key: "method", value: .string(method)),
            (key: "entry", value: .array(entry.map { .string($0) })), (key: "payload", value: .binary(payload)),
            (key: "deadline_ms", value: .uint(deadlineMs)),
        ]
        if resetAfter { entries.append((key: "reset_after", value: .bool(true))) }
        return entries
    }

    fileprivate init(_ fields: FrameFields) throws(WireError) {
        self.init(
            id: try fields.string("id"), method: try fields.string("method"), entry: try fields.strings("entry"),
            payload: try fields.bytes("payload"), deadlineMs: try fields.integer("deadline_ms", UInt64.self),
            resetAfter: try fields.optionalBool("reset_after") ?? false)
    }
}

/// The string-keyed fields of a frame's map, read with the Codable path's error reporting.
private struct FrameFields {
    private let entries: [(key: MessagePackValue, value: MessagePackValue)]

    init(_ value: MessagePackValue) throws(WireError) {
        guard case .map(let entries) = value else {
            throw .typeMismatch(expected: "map", found: value.typeName, path: "")
        }
        self.entries = entries
    }

    func value(_ key: String) throws(WireError) -> MessagePackValue {
        for entry in entries {
            if case .string(let candidate) = entry.key, candidate == key { return entry.value }
        }
        throw .missingKey(key, path: "")
    }

    func string(_ key: String) throws(WireError) -> String {
        let found = try value(key)
        guard case .string(let text) = found else { throw .typeMismatch(expected: "str", found: found.typeName, path: key) }
        return text
    }

    func bytes(_ key: String) throws(WireError) -> [UInt8] {
        let found = try value(key)
        guard case .binary(let bytes) = found else { throw .typeMismatch(expected: "bin", found: found.typeName, path: key) }
        return bytes
    }

    func array(_ key: String) throws(WireError) -> [MessagePackValue] {
        let found = try value(key)
        guard case .array(let elements) = found else { throw .typeMismatch(expected: "array", found: found.typeName, path: key) }
        return elements
    }

    func strings(_ key: String) throws(WireError) -> [String] {
        let found = try value(key)
        guard case .array(let elements) = found else {
            throw .typeMismatch(expected: "array", found: found.typeName, path: key)
        }
        var strings: [String] = []
        strings.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            guard case .string(let text) = element else {
                throw .typeMismatch(expected: "str", found: element.typeName, path: "\(key)[\(index)]")
            }
            strings.append(text)
        }
        return strings
    }

    func integer<T: FixedWidthInteger>(_ key: String, _: T.Type) throws(WireError) -> T {
        let found = try value(key)
        switch found {
        case .uint(let number):
            guard let exact = T(exactly: number) else { throw .invalidValue("\(number) does not fit \(T.self)", path: key) }
            return exact
        case .int(let number):
            guard let exact = T(exactly: number) else { throw .invalidValue("\(number) does not fit \(T.self)", path: key) }
            return exact
        default:
            throw .typeMismatch(expected: "int", found: found.typeName, path: key)
        }
    }

    func optionalInteger<T: FixedWidthInteger>(_ key: String, _ type: T.Type) throws(WireError) -> T? {
        guard let found = try? value(key), found != .nil else { return nil }
        return try integer(key, type)
    }

    func optionalBool(_ key: String) throws(WireError) -> Bool? {
        guard let found = try? value(key) else { return nil }
        switch found {
        case .nil: return nil
        case .bool(let flag): return flag
        default: throw .typeMismatch(expected: "bool", found: found.typeName, path: key)
        }
    }

    func optionalString(_ key: String) throws(WireError) -> String? {
        guard let found = try? value(key) else { return nil }
        switch found {
        case .nil: return nil
        case .string(let text): return text
        default: throw .typeMismatch(expected: "str", found: found.typeName, path: key)
        }
    }

    func double(_ key: String) throws(WireError) -> Double {
        let found = try value(key)
        guard let number = found.doubleValue else {
            throw .typeMismatch(expected: "float", found: found.typeName, path: key)
        }
        return number
    }
}
