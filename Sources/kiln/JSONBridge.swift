import Foundation
import KilnWire

/// JSON on the command line and MessagePack on the wire: the same view as schemas/README.md —
/// a bin is `{"$bin": "<base64>"}`, an ext `{"$ext": {"type": N, "data": "<base64>"}}`.
enum JSONBridge {
    struct InvalidJSON: Error, CustomStringConvertible {
        let description: String
    }

    /// Parses JSON text into a MessagePack value.
    static func value(fromJSON text: String) throws -> MessagePackValue {
        do {
            let object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
            return value(from: object)
        } catch {
            throw InvalidJSON(description: "not valid JSON: \(text.prefix(80))")
        }
    }

    static func value(from object: Any) -> MessagePackValue {
        switch object {
        case is NSNull:
            return .nil
        case let number as NSNumber:
            let kind = String(cString: number.objCType)
            if kind == "c" { return .bool(number.boolValue) }
            if kind == "d" || kind == "f" {
                let double = number.doubleValue
                if double == double.rounded(), abs(double) < 9e15, number.stringValue.contains(".") == false {
                    return double < 0 ? .int(Int64(double)) : .uint(UInt64(double))
                }
                return .double(double)
            }
            if number.int64Value < 0 { return .int(number.int64Value) }
            return .uint(number.uint64Value)
        case let string as String:
            return .string(string)
        case let array as [Any]:
            return .array(array.map(value(from:)))
        case let map as [String: Any]:
            if map.count == 1, let base64 = map["$bin"] as? String, let data = Data(base64Encoded: base64) {
                return .binary([UInt8](data))
            }
            if map.count == 1, let ext = map["$ext"] as? [String: Any], let type = ext["type"] as? Int,
               let base64 = ext["data"] as? String, let data = Data(base64Encoded: base64) {
                return .ext(type: Int8(truncatingIfNeeded: type), data: [UInt8](data))
            }
            return .map(map.keys.sorted().map { (key: .string($0), value: value(from: map[$0]!)) })
        default:
            return .string(String(describing: object))
        }
    }

    /// The JSON view of a MessagePack value.
    static func jsonObject(_ value: MessagePackValue) -> Any {
        switch value {
        case .nil: return NSNull()
        case .bool(let bool): return bool
        case .int(let int): return int
        case .uint(let uint): return uint
        case .float(let float): return Double(float)
        case .double(let double): return double
        case .string(let string): return string
        case .binary(let bytes): return ["$bin": Data(bytes).base64EncodedString()]
        case .ext(let type, let data): return ["$ext": ["type": Int(type), "data": Data(data).base64EncodedString()]]
        case .array(let elements): return elements.map(jsonObject)
        case .map(let entries):
            var map: [String: Any] = [:]
            for entry in entries {
                let key = entry.key.stringValue ?? String(describing: jsonObject(entry.key))
                map[key] = jsonObject(entry.value)
            }
            return map
        }
    }

    /// Compact JSON text for a MessagePack value.
    static func text(_ value: MessagePackValue, pretty: Bool = false) -> String {
        let object = jsonObject(value)
        let options: JSONSerialization.WritingOptions = pretty ? [.prettyPrinted, .sortedKeys, .fragmentsAllowed] : [.sortedKeys, .fragmentsAllowed]
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: options) else { return "\(value)" }
        return String(decoding: data, as: UTF8.self)
    }
}
