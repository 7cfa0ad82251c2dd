/// Any MessagePack value: the type of the free-form fields of the wire contract (`args`, `output`,
/// `locals`) and of anything a producer sends that Kiln passes through unchanged.
///
/// Every MessagePack type round-trips. Integers keep their sign class: a non-negative integer
/// decodes as ``uint(_:)`` and a negative one as ``int(_:)``; equality compares integers by value,
/// so `.int(5) == .uint(5)`. Maps keep their order and may have keys of any type.
public enum MessagePackValue: Sendable {
    case `nil`
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case float(Float)
    case double(Double)
    case string(String)
    case binary([UInt8])
    case array([MessagePackValue])
    case map([(key: MessagePackValue, value: MessagePackValue)])
    case ext(type: Int8, data: [UInt8])
}

extension MessagePackValue {
    /// The value with the entries of every map, at any depth, in the order of their string keys
    /// (other keys after them, in their order): one encoding for equal values, whatever order
    /// a dictionary gave them.
    public func sortingKeys() -> MessagePackValue {
        switch self {
        case .array(let elements):
            return .array(elements.map { $0.sortingKeys() })
        case .map(let entries):
            let sorted = entries.enumerated().sorted { left, right in
                switch (left.element.key.stringValue, right.element.key.stringValue) {
                case let (a?, b?): return a == b ? left.offset < right.offset : a < b
                case (.some, nil): return true
                case (nil, .some): return false
                case (nil, nil): return left.offset < right.offset
                }
            }
            return .map(sorted.map { (key: $0.element.key, value: $0.element.value.sortingKeys()) })
        default:
            return self
        }
    }

    /// The value under a string key when this is a map, else `nil`.
    public subscript(key: String) -> MessagePackValue? {
        guard case .map(let entries) = self else { return nil }
        for entry in entries {
            if case .string(let candidate) = entry.key, candidate == key { return entry.value }
        }
        return nil
    }

    /// The element at `index` when this is an array and the index is in range, else `nil`.
    public subscript(index: Int) -> MessagePackValue? {
        guard case .array(let elements) = self, elements.indices.contains(index) else { return nil }
        return elements[index]
    }

    /// The string, when this is a string.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The integer, when this is an integer that fits an `Int64`.
    public var int64Value: Int64? {
        switch self {
        case .int(let value): return value
        case .uint(let value): return value <= UInt64(Int64.max) ? Int64(value) : nil
        default: return nil
        }
    }

    /// The integer, when this is a non-negative integer.
    public var uint64Value: UInt64? {
        switch self {
        case .uint(let value): return value
        case .int(let value): return value >= 0 ? UInt64(value) : nil
        default: return nil
        }
    }

    /// The number as a `Double`, when this is an integer or a float.
    public var doubleValue: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .uint(let value): return Double(value)
        case .float(let value): return Double(value)
        case .double(let value): return value
        default: return nil
        }
    }

    /// The bytes, when this is a binary value.
    public var binaryValue: [UInt8]? {
        if case .binary(let value) = self { return value }
        return nil
    }

    /// The MessagePack type name, as errors report it.
    public var typeName: String {
        switch self {
        case .nil: return "nil"
        case .bool: return "bool"
        case .int, .uint: return "int"
        case .float: return "float32"
        case .double: return "float64"
        case .string: return "str"
        case .binary: return "bin"
        case .array: return "array"
        case .map: return "map"
        case .ext: return "ext"
        }
    }
}

extension MessagePackValue: Equatable {
    public static func == (lhs: MessagePackValue, rhs: MessagePackValue) -> Bool {
        switch (lhs, rhs) {
        case (.nil, .nil): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.int, .int), (.int, .uint), (.uint, .int), (.uint, .uint):
            return lhs.int64Value == rhs.int64Value && lhs.uint64Value == rhs.uint64Value
        case (.float(let a), .float(let b)): return a == b || (a.isNaN && b.isNaN)
        case (.double(let a), .double(let b)): return a == b || (a.isNaN && b.isNaN)
        case (.string(let a), .string(let b)): return a == b
        case (.binary(let a), .binary(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.map(let a), .map(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.ext(let typeA, let dataA), .ext(let typeB, let dataB)): return typeA == typeB && dataA == dataB
        default: return false
        }
    }
}

extension MessagePackValue: ExpressibleByNilLiteral {
    public init(nilLiteral: ()) { self = .nil }
}

extension MessagePackValue: ExpressibleByBooleanLiteral {
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension MessagePackValue: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int64) { self = value < 0 ? .int(value) : .uint(UInt64(value)) }
}

extension MessagePackValue: ExpressibleByFloatLiteral {
    public init(floatLiteral value: Double) { self = .double(value) }
}

extension MessagePackValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}

extension MessagePackValue: ExpressibleByArrayLiteral {
    public init(arrayLiteral elements: MessagePackValue...) { self = .array(elements) }
}

extension MessagePackValue: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, MessagePackValue)...) {
        self = .map(elements.map { (key: .string($0.0), value: $0.1) })
    }
}
