import CMsgPack

/// Generic code (`Array<Element>.init(from:)`, `encode<T>(_:)`) reaches the coders through their
/// generic entry points even for plain scalars. These fast paths read and write the standard
/// scalar types in place, without an `Encoder`/`Decoder` object per element and without
/// instantiating generic metadata such as `Optional<T>` on every value.
enum ScalarKind {
    case string, int, double, bool, uint64, int64, uint32, int32, uint8, float, uint16, int16, int8, uint

    /// The kind of `type`, or `nil` when it is not a standard scalar type.
    init?(_ type: Any.Type) {
        switch ObjectIdentifier(type) {
        case ObjectIdentifier(String.self): self = .string
        case ObjectIdentifier(Int.self): self = .int
        case ObjectIdentifier(Double.self): self = .double
        case ObjectIdentifier(Bool.self): self = .bool
        case ObjectIdentifier(UInt64.self): self = .uint64
        case ObjectIdentifier(Int64.self): self = .int64
        case ObjectIdentifier(UInt32.self): self = .uint32
        case ObjectIdentifier(Int32.self): self = .int32
        case ObjectIdentifier(UInt8.self): self = .uint8
        case ObjectIdentifier(Float.self): self = .float
        case ObjectIdentifier(UInt16.self): self = .uint16
        case ObjectIdentifier(Int16.self): self = .int16
        case ObjectIdentifier(Int8.self): self = .int8
        case ObjectIdentifier(UInt.self): self = .uint
        default: return nil
        }
    }
}

extension msgpack_object {
    /// This object read as `T`, whose kind is `kind`.
    func scalar<T>(_ kind: ScalarKind, as _: T.Type, _ path: () -> String) throws(WireError) -> T {
        switch kind {
        case .string: return unsafeBitCast(try string(path), to: T.self)
        case .int: return unsafeBitCast(try integer(Int.self, path), to: T.self)
        case .double: return unsafeBitCast(try double(path), to: T.self)
        case .bool: return unsafeBitCast(try bool(path), to: T.self)
        case .uint64: return unsafeBitCast(try integer(UInt64.self, path), to: T.self)
        case .int64: return unsafeBitCast(try integer(Int64.self, path), to: T.self)
        case .uint32: return unsafeBitCast(try integer(UInt32.self, path), to: T.self)
        case .int32: return unsafeBitCast(try integer(Int32.self, path), to: T.self)
        case .uint8: return unsafeBitCast(try integer(UInt8.self, path), to: T.self)
        case .float: return unsafeBitCast(Float(try double(path)), to: T.self)
        case .uint16: return unsafeBitCast(try integer(UInt16.self, path), to: T.self)
        case .int16: return unsafeBitCast(try integer(Int16.self, path), to: T.self)
        case .int8: return unsafeBitCast(try integer(Int8.self, path), to: T.self)
        case .uint: return unsafeBitCast(try integer(UInt.self, path), to: T.self)
        }
    }
}

/// The standard collections of scalars that method contexts are made of. Unspecialized generic
/// `Array`/`Dictionary` coding looks up metadata on every element; these are built directly.
enum CollectionKind {
    case strings, ints, doubles, bools, uint64s, int64s, stringToString, stringToValue

    private static let kinds: [ObjectIdentifier: CollectionKind] = [
        ObjectIdentifier([String].self): .strings,
        ObjectIdentifier([Int].self): .ints,
        ObjectIdentifier([Double].self): .doubles,
        ObjectIdentifier([Bool].self): .bools,
        ObjectIdentifier([UInt64].self): .uint64s,
        ObjectIdentifier([Int64].self): .int64s,
        ObjectIdentifier([String: String].self): .stringToString,
        ObjectIdentifier([String: MessagePackValue].self): .stringToValue,
    ]

    /// The kind of `type`, or `nil` when it is not one of these collections.
    init?(_ type: Any.Type) {
        guard let kind = Self.kinds[ObjectIdentifier(type)] else { return nil }
        self = kind
    }
}

extension ObjectDecoder {
    /// This object read as `T`, a collection of kind `kind`.
    func collection<T>(_ kind: CollectionKind, as _: T.Type) throws -> T {
        switch kind {
        case .strings: return try array(of: String.self, .string) as! T
        case .ints: return try array(of: Int.self, .int) as! T
        case .doubles: return try array(of: Double.self, .double) as! T
        case .bools: return try array(of: Bool.self, .bool) as! T
        case .uint64s: return try array(of: UInt64.self, .uint64) as! T
        case .int64s: return try array(of: Int64.self, .int64) as! T
        case .stringToString: return try dictionary { (object, path) throws(WireError) in try object.string(path) } as! T
        case .stringToValue: return try dictionary { (object, path) throws(WireError) in try object.value(path: path()) } as! T
        }
    }

    private func array<Element>(of _: Element.Type, _ kind: ScalarKind) throws -> [Element] {
        guard object.type == MSGPACK_OBJECT_ARRAY else { throw object.mismatch("array", { dottedPath }) }
        var elements: [Element] = []
        elements.reserveCapacity(Int(object.via.array.size))
        for (index, element) in object.arrayElements.enumerated() {
            elements.append(try element.scalar(kind, as: Element.self) {
                CodingPathNode.index(index, parent: path).dotted
            })
        }
        return elements
    }

    private func dictionary<Value>(
        _ read: (msgpack_object, () -> String) throws(WireError) -> Value
    ) throws -> [String: Value] {
        guard object.type == MSGPACK_OBJECT_MAP else { throw object.mismatch("map", { dottedPath }) }
        var dictionary: [String: Value] = [:]
        dictionary.reserveCapacity(Int(object.via.map.size))
        for entry in object.mapEntries {
            let key = try entry.key.string { dottedPath }
            dictionary[key] = try read(entry.val) { CodingPathNode.key(key, parent: path).dotted }
        }
        return dictionary
    }
}

extension MessagePackWriter {
    /// Writes `value`, a standard scalar of kind `kind`.
    func write<T>(scalar value: T, _ kind: ScalarKind) {
        switch kind {
        case .string: write(unsafeBitCast(value, to: String.self))
        case .int: write(integer: unsafeBitCast(value, to: Int.self))
        case .double: write(unsafeBitCast(value, to: Double.self))
        case .bool: write(unsafeBitCast(value, to: Bool.self))
        case .uint64: write(unsafeBitCast(value, to: UInt64.self))
        case .int64: write(unsafeBitCast(value, to: Int64.self))
        case .uint32: write(integer: unsafeBitCast(value, to: UInt32.self))
        case .int32: write(integer: unsafeBitCast(value, to: Int32.self))
        case .uint8: write(integer: unsafeBitCast(value, to: UInt8.self))
        case .float: write(unsafeBitCast(value, to: Float.self))
        case .uint16: write(integer: unsafeBitCast(value, to: UInt16.self))
        case .int16: write(integer: unsafeBitCast(value, to: Int16.self))
        case .int8: write(integer: unsafeBitCast(value, to: Int8.self))
        case .uint: write(integer: unsafeBitCast(value, to: UInt.self))
        }
    }

    /// Writes `value`, a collection of kind `kind`.
    func write<T>(collection value: T, _ kind: CollectionKind) {
        switch kind {
        case .strings: writeArray(value as! [String], write)
        case .ints: writeArray(value as! [Int]) { write(integer: $0) }
        case .doubles: writeArray(value as! [Double], write)
        case .bools: writeArray(value as! [Bool], write)
        case .uint64s: writeArray(value as! [UInt64], write)
        case .int64s: writeArray(value as! [Int64], write)
        case .stringToString: writeMap(value as! [String: String], write)
        case .stringToValue: writeMap(value as! [String: MessagePackValue], write)
        }
    }

    private func writeArray<Element>(_ elements: [Element], _ writeElement: (Element) -> Void) {
        writeArrayHeader(count: elements.count)
        for element in elements { writeElement(element) }
    }

    private func writeMap<Value>(_ entries: [String: Value], _ writeValue: (Value) -> Void) {
        writeMapHeader(count: entries.count)
        for (key, value) in entries {
            write(key)
            writeValue(value)
        }
    }
}
