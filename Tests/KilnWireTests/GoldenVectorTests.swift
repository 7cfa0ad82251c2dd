import Foundation
import KilnWire
import Testing

/// The golden vectors in schemas/vectors were written by Python's msgpack library from their
/// JSON twins (schemas/vectors/generate.py); KilnWire must read every one.
@Suite("Golden vectors")
struct GoldenVectorTests {
    static let vectors = repositoryRoot.appendingPathComponent("schemas/vectors")

    static var names: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: vectors.path)) ?? []
        return files.filter { $0.hasSuffix(".msgpack") }.map { String($0.dropLast(".msgpack".count)) }.sorted()
    }

    static var invalidNames: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: vectors.appendingPathComponent("invalid").path)) ?? []
        return files.filter { $0.hasSuffix(".msgpack") }.map { String($0.dropLast(".msgpack".count)) }.sorted()
    }

    @Test func thereAreVectorsOfEveryKind() {
        for prefix in ["invocation-", "result-", "telemetry-", "guest-"] {
            #expect(Self.names.contains { $0.hasPrefix(prefix) }, "no \(prefix) vectors")
        }
        #expect(Self.invalidNames.count >= 10)
    }

    @Test(arguments: names)
    func vectorDecodesToItsTwin(_ name: String) throws {
        let bytes = try [UInt8](Data(contentsOf: Self.vectors.appendingPathComponent("\(name).msgpack")))
        let twin = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.vectors.appendingPathComponent("\(name).json")), options: [.fragmentsAllowed])
        let value = try MessagePackDecoder().decodeValue(from: bytes)
        #expect(TaggedJSON.matches(value, twin), "\(name): decoded \(value)")

        // The typed decode succeeds, and re-encoding the typed value keeps what it understood.
        switch name {
        case let name where name.hasPrefix("invocation-"):
            let invocation = try bytes.withUnsafeBytes { try Invocation.decode(body: $0, messageID: "from-amqp") }
            #expect(invocation.method == value["method"]?.stringValue)
            #expect(try reencoded(invocation) == invocation)
        case let name where name.hasPrefix("result-"):
            let result = try MessagePackDecoder().decode(InvocationResult.self, from: bytes)
            #expect(result.status.rawValue == value["status"]?.stringValue)
            #expect(try reencoded(result) == result)
        case let name where name.hasPrefix("telemetry-"):
            let event = try MessagePackDecoder().decode(TelemetryEvent.self, from: bytes)
            #expect(event.payload.kind == value["kind"]?.stringValue)
            #expect(try reencoded(event) == event)
        case let name where name.hasPrefix("guest-"):
            let frame = try GuestFrame.decode(body: bytes)
            #expect(frame.type == value["type"]?.stringValue)
            #expect(try reencoded(frame) == frame)
        default:
            Issue.record("vector \(name) has no known prefix")
        }
    }

    @Test func allTypesVectorHasEveryMessagePackType() throws {
        let bytes = try [UInt8](Data(contentsOf: Self.vectors.appendingPathComponent("invocation-all-types.msgpack")))
        let args = try #require(try MessagePackDecoder().decodeValue(from: bytes)["args"])
        #expect(args["u64_max"] == .uint(.max))
        #expect(args["i64_min"] == .int(.min))
        #expect(args["f32"] == .float(1.5))
        #expect(args["f64"] == .double(3.141592653589793))
        #expect(args["bin"] == .binary((0...255).map { UInt8($0) }))
        #expect(args["ext"] == .ext(type: 7, data: [1, 2, 3, 4]))
        #expect(args["nil"] == .nil)
        #expect(args["str"] == "grüße, 世界 🔥")
    }

    @Test(arguments: invalidNames)
    func invalidVectorFailsWithItsError(_ name: String) throws {
        let expected = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.vectors.appendingPathComponent("invalid/expected.json"))) as? [String: String]
        let expectedCase = try #require(expected?[name], "invalid/expected.json has no entry for \(name)")
        let bytes = try [UInt8](Data(contentsOf: Self.vectors.appendingPathComponent("invalid/\(name).msgpack")))
        do {
            if name.hasPrefix("result-") {
                _ = try MessagePackDecoder().decode(InvocationResult.self, from: bytes)
            } else {
                _ = try bytes.withUnsafeBytes { try Invocation.decode(body: $0, messageID: nil) }
            }
            Issue.record("\(name) decoded, expected \(expectedCase)")
        } catch let error as WireError {
            #expect(error.caseName == expectedCase, "\(name): \(error)")
        } catch {
            Issue.record("\(name) threw \(error), not a WireError")
        }
    }

    func reencoded<T: Codable>(_ value: T) throws -> T {
        try MessagePackDecoder().decode(T.self, from: try MessagePackEncoder().encode(value))
    }
}

extension WireError {
    /// The case's name, as schemas/vectors/invalid/expected.json spells it.
    var caseName: String {
        switch self {
        case .truncated: return "truncated"
        case .invalidByte: return "invalidByte"
        case .trailingBytes: return "trailingBytes"
        case .limitExceeded: return "limitExceeded"
        case .invalidUTF8: return "invalidUTF8"
        case .typeMismatch: return "typeMismatch"
        case .missingKey: return "missingKey"
        case .invalidValue: return "invalidValue"
        case .unsupportedVersion: return "unsupportedVersion"
        case .unpackerFailed: return "unpackerFailed"
        case .packerFailed: return "packerFailed"
        }
    }
}

/// Compares a decoded value with the tagged JSON twin of schemas/vectors/tagged_json.py.
enum TaggedJSON {
    static func matches(_ value: MessagePackValue, _ json: Any) -> Bool {
        if let object = json as? [String: Any] {
            if object.count == 1, let base64 = object["$bin"] as? String {
                return value == .binary([UInt8](Data(base64Encoded: base64) ?? Data()))
            }
            if object.count == 1, let ext = object["$ext"] as? [String: Any],
               let type = ext["type"] as? Int, let base64 = ext["data"] as? String {
                return value == .ext(type: Int8(type), data: [UInt8](Data(base64Encoded: base64) ?? Data()))
            }
            if object.count == 1, let number = object["$f32"] as? NSNumber {
                return value == .float(number.floatValue)
            }
            guard case .map(let entries) = value, entries.count == object.count else { return false }
            return entries.allSatisfy { entry in
                guard let key = entry.key.stringValue, let twin = object[key] else { return false }
                return matches(entry.value, twin)
            }
        }
        if let array = json as? [Any] {
            guard case .array(let elements) = value, elements.count == array.count else { return false }
            return zip(elements, array).allSatisfy { matches($0, $1) }
        }
        if json is NSNull { return value == .nil }
        if let string = json as? String { return value == .string(string) }
        if let number = json as? NSNumber {
            let kind = String(cString: number.objCType)
            switch value {
            case .bool(let bool): return kind == "c" && number.boolValue == bool
            case .uint(let uint): return kind != "c" && number.stringValue == "\(uint)"
            case .int(let int): return kind != "c" && number.stringValue == "\(int)"
            case .double(let double): return kind == "d" && number.doubleValue == double
            default: return false
            }
        }
        return false
    }
}
