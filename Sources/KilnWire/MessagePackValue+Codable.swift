/// `MessagePackValue` is `Codable` so that message types can hold free-form fields. With
/// KilnWire's coders it is copied as it is; with other coders (JSON, for the CLI) it maps to the
/// nearest type they have: bin and ext become arrays of bytes.
extension MessagePackValue: Codable {
    public init(from decoder: any Decoder) throws {
        if let object = decoder as? ObjectDecoder {
            self = try object.object.value(path: object.dottedPath)
            return
        }
        if var array = try? decoder.unkeyedContainer() {
            var elements: [MessagePackValue] = []
            while !array.isAtEnd { elements.append(try array.decode(MessagePackValue.self)) }
            self = .array(elements)
            return
        }
        if let map = try? decoder.container(keyedBy: IndexOrNameKey.self) {
            self = .map(try map.allKeys.map { key in
                (key: .string(key.stringValue), value: try map.decode(MessagePackValue.self, forKey: key))
            })
            return
        }
        let single = try decoder.singleValueContainer()
        if single.decodeNil() {
            self = .nil
        } else if let bool = try? single.decode(Bool.self) {
            self = .bool(bool)
        } else if let uint = try? single.decode(UInt64.self) {
            self = .uint(uint)
        } else if let int = try? single.decode(Int64.self) {
            self = .int(int)
        } else if let double = try? single.decode(Double.self) {
            self = .double(double)
        } else {
            self = .string(try single.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .nil:
            var single = encoder.singleValueContainer()
            try single.encodeNil()
        case .bool(let value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case .int(let value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case .uint(let value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case .float(let value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case .double(let value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case .string(let value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case .binary(let bytes), .ext(_, let bytes):
            var array = encoder.unkeyedContainer()
            for byte in bytes { try array.encode(byte) }
        case .array(let elements):
            var array = encoder.unkeyedContainer()
            for element in elements { try array.encode(element) }
        case .map(let entries):
            var map = encoder.container(keyedBy: IndexOrNameKey.self)
            for entry in entries {
                let key = entry.key.stringValue ?? String(describing: entry.key)
                try map.encode(entry.value, forKey: IndexOrNameKey(stringValue: key))
            }
        }
    }
}
