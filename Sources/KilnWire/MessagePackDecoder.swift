import CMsgPack

/// Decodes `Decodable` values from MessagePack, through msgpack-c, within ``WireLimits``.
///
/// ```swift
/// let invocation = try MessagePackDecoder().decode(Invocation.self, from: body)
/// ```
///
/// `[UInt8]` decodes from a MessagePack bin, and ``MessagePackValue`` takes whatever is there.
/// Integer and float types accept any MessagePack value of their kind that fits them exactly.
/// Unknown map keys are ignored. Every failure is a ``WireError`` naming the path of the field.
public struct MessagePackDecoder: Sendable {
    /// The bounds every input is checked against before it is unpacked.
    public var limits: WireLimits

    /// Creates a decoder with the given limits.
    public init(limits: WireLimits = .default) {
        self.limits = limits
    }

    /// Decodes a `T` from `bytes`.
    public func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(WireError) -> T {
        do {
            return try bytes.withUnsafeBytes { try decode(type, from: $0) }
        } catch {
            throw WireError(translating: error)
        }
    }

    /// Decodes a `T` from the bytes in `buffer`, which need only live for the call.
    public func decode<T: Decodable>(_ type: T.Type, from buffer: UnsafeRawBufferPointer) throws(WireError) -> T {
        do {
            return try withUnpackedRoot(buffer, limits: limits) { root in
                try ObjectDecoder(root, path: .root).decodeValue(T.self)
            }
        } catch {
            throw WireError(translating: error)
        }
    }

    /// Decodes whatever MessagePack value `bytes` holds.
    public func decodeValue(from bytes: [UInt8]) throws(WireError) -> MessagePackValue {
        try decode(MessagePackValue.self, from: bytes)
    }
}

extension WireError {
    /// Maps an error thrown while encoding or decoding, including the `DecodingError`s that
    /// synthesized or hand-written `init(from:)` implementations throw, to a ``WireError``.
    init(translating error: any Error) {
        switch error {
        case let wire as WireError:
            self = wire
        case let EncodingError.invalidValue(_, context):
            self = .invalidValue(context.debugDescription, path: context.codingPath.dottedPath)
        case let DecodingError.dataCorrupted(context):
            self = .invalidValue(context.debugDescription, path: context.codingPath.dottedPath)
        case let DecodingError.keyNotFound(key, context):
            self = .missingKey(key.stringValue, path: context.codingPath.dottedPath)
        case let DecodingError.typeMismatch(type, context):
            self = .typeMismatch(expected: "\(type)", found: context.debugDescription, path: context.codingPath.dottedPath)
        case let DecodingError.valueNotFound(type, context):
            self = .typeMismatch(expected: "\(type)", found: "nil", path: context.codingPath.dottedPath)
        default:
            self = .invalidValue(String(describing: error), path: "")
        }
    }
}

/// The `Decoder` for one object of an unpacked body.
final class ObjectDecoder: Decoder {
    let object: msgpack_object
    let path: CodingPathNode
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    /// Where the next key lookup in this map starts: at the last entry found.
    var nextLookup = 0

    init(_ object: msgpack_object, path: CodingPathNode) {
        self.object = object
        self.path = path
    }

    var codingPath: [any CodingKey] { path.codingPath }
    var dottedPath: String { path.dotted }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard object.type == MSGPACK_OBJECT_MAP else { throw object.mismatch("map", { dottedPath }) }
        return KeyedDecodingContainer(MapDecodingContainer<Key>(decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard object.type == MSGPACK_OBJECT_ARRAY else { throw object.mismatch("array", { dottedPath }) }
        return ArrayDecodingContainer(decoder: self)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { self }

    /// Decodes this object as a `T`, taking the fast paths for bytes, strings and free-form values.
    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        if let kind = ScalarKind(T.self) { return try object.scalar(kind, as: T.self) { dottedPath } }
        let id = ObjectIdentifier(T.self)
        if id == SpecialTypes.value { return try object.value(path: dottedPath) as! T }
        if id == SpecialTypes.bytes { return try object.bytes({ dottedPath }) as! T }
        if let kind = CollectionKind(T.self) { return try collection(kind, as: T.self) }
        return try T(from: self)
    }
}

extension ObjectDecoder: SingleValueDecodingContainer {
    func decodeNil() -> Bool { object.type == MSGPACK_OBJECT_NIL }
    func decode(_ type: Bool.Type) throws -> Bool { try object.bool { dottedPath } }
    func decode(_ type: String.Type) throws -> String { try object.string { dottedPath } }
    func decode(_ type: Double.Type) throws -> Double { try object.double { dottedPath } }
    func decode(_ type: Float.Type) throws -> Float { Float(try object.double { dottedPath }) }
    func decode(_ type: Int.Type) throws -> Int { try object.integer(type) { dottedPath } }
    func decode(_ type: Int8.Type) throws -> Int8 { try object.integer(type) { dottedPath } }
    func decode(_ type: Int16.Type) throws -> Int16 { try object.integer(type) { dottedPath } }
    func decode(_ type: Int32.Type) throws -> Int32 { try object.integer(type) { dottedPath } }
    func decode(_ type: Int64.Type) throws -> Int64 { try object.integer(type) { dottedPath } }
    func decode(_ type: UInt.Type) throws -> UInt { try object.integer(type) { dottedPath } }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try object.integer(type) { dottedPath } }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try object.integer(type) { dottedPath } }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try object.integer(type) { dottedPath } }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try object.integer(type) { dottedPath } }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeValue(type) }
}

/// Reads the entries of a map by key. A lookup starts at the entry found last, since fields are
/// usually read in the order they were written; scalars are read in place, without a decoder.
struct MapDecodingContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: ObjectDecoder
    let entries: UnsafeBufferPointer<msgpack_object_kv>

    init(decoder: ObjectDecoder) {
        self.decoder = decoder
        self.entries = decoder.object.mapEntries
    }

    var codingPath: [any CodingKey] { decoder.codingPath }

    var allKeys: [Key] {
        entries.compactMap { entry in entry.key.validatedString.flatMap { Key(stringValue: $0) } }
    }

    /// The value under `key`, if the map has it.
    func find(_ key: Key) -> msgpack_object? {
        var name = key.stringValue
        return name.withUTF8 { utf8 -> msgpack_object? in
            let count = entries.count
            guard count > 0 else { return nil }
            var index = decoder.nextLookup < count ? decoder.nextLookup : 0
            for _ in 0..<count {
                if entries[index].key.isString(equalTo: utf8) {
                    decoder.nextLookup = index + 1 == count ? 0 : index + 1
                    return entries[index].val
                }
                index = index + 1 == count ? 0 : index + 1
            }
            return nil
        }
    }

    func path(_ key: Key) -> String { decoder.path.appending(key).dotted }

    func require(_ key: Key) throws(WireError) -> msgpack_object {
        guard let object = find(key) else { throw .missingKey(key.stringValue, path: decoder.dottedPath) }
        return object
    }

    /// The value under `key`, or `nil` when it is absent or MessagePack nil.
    func present(_ key: Key) -> msgpack_object? {
        guard let object = find(key), object.type != MSGPACK_OBJECT_NIL else { return nil }
        return object
    }

    func child(_ key: Key) throws -> ObjectDecoder {
        ObjectDecoder(try require(key), path: decoder.path.appending(key))
    }

    func contains(_ key: Key) -> Bool { find(key) != nil }
    func decodeNil(forKey key: Key) throws -> Bool { try require(key).type == MSGPACK_OBJECT_NIL }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try require(key).bool { path(key) } }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try require(key).string { path(key) } }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try require(key).double { path(key) } }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try require(key).integer(type) { path(key) } }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try require(key).integer(type) { path(key) } }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try require(key).integer(type) { path(key) } }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try require(key).integer(type) { path(key) } }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try require(key).integer(type) { path(key) } }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        let object = try require(key)
        if let kind = ScalarKind(T.self) { return try object.scalar(kind, as: T.self) { path(key) } }
        return try ObjectDecoder(object, path: decoder.path.appending(key)).decodeValue(type)
    }

    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? {
        try present(key)?.bool { path(key) }
    }

    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? {
        try present(key)?.string { path(key) }
    }

    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? {
        try present(key)?.double { path(key) }
    }

    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? {
        try present(key)?.integer(type) { path(key) }
    }

    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? {
        try present(key)?.integer(type) { path(key) }
    }

    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? {
        try present(key)?.integer(type) { path(key) }
    }

    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? {
        try present(key)?.integer(type) { path(key) }
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let object = present(key) else { return nil }
        if let kind = ScalarKind(T.self) { return try object.scalar(kind, as: T.self) { path(key) } }
        return try ObjectDecoder(object, path: decoder.path.appending(key)).decodeValue(type)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try child(key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try child(key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        let key = IndexOrNameKey.superKey
        var name = key.stringValue
        let object = name.withUTF8 { utf8 in entries.first { $0.key.isString(equalTo: utf8) }?.val }
        guard let object else { throw WireError.missingKey("super", path: decoder.dottedPath) }
        return ObjectDecoder(object, path: decoder.path.appending(key))
    }

    func superDecoder(forKey key: Key) throws -> any Decoder { try child(key) }
}

/// Reads the elements of an array in order; scalars are read in place, without a decoder.
struct ArrayDecodingContainer: UnkeyedDecodingContainer {
    let decoder: ObjectDecoder
    let elements: UnsafeBufferPointer<msgpack_object>
    private(set) var currentIndex = 0

    init(decoder: ObjectDecoder) {
        self.decoder = decoder
        self.elements = decoder.object.arrayElements
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    /// The path of the element at `index`.
    func path(_ index: Int) -> String { CodingPathNode.index(index, parent: decoder.path).dotted }

    /// The next element, moving past it.
    mutating func next() throws(WireError) -> (object: msgpack_object, index: Int) {
        guard !isAtEnd else {
            throw .invalidValue("array has only \(elements.count) elements", path: decoder.dottedPath)
        }
        defer { currentIndex += 1 }
        return (elements[currentIndex], currentIndex)
    }

    mutating func nextDecoder() throws -> ObjectDecoder {
        let (object, index) = try next()
        return ObjectDecoder(object, path: .index(index, parent: decoder.path))
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, elements[currentIndex].type == MSGPACK_OBJECT_NIL else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool {
        let (object, index) = try next()
        return try object.bool { path(index) }
    }

    mutating func decode(_ type: String.Type) throws -> String {
        let (object, index) = try next()
        return try object.string { path(index) }
    }

    mutating func decode(_ type: Double.Type) throws -> Double {
        let (object, index) = try next()
        return try object.double { path(index) }
    }

    mutating func decode(_ type: Int.Type) throws -> Int {
        let (object, index) = try next()
        return try object.integer(type) { path(index) }
    }

    mutating func decode(_ type: Int64.Type) throws -> Int64 {
        let (object, index) = try next()
        return try object.integer(type) { path(index) }
    }

    mutating func decode(_ type: UInt8.Type) throws -> UInt8 {
        let (object, index) = try next()
        return try object.integer(type) { path(index) }
    }

    mutating func decode(_ type: UInt64.Type) throws -> UInt64 {
        let (object, index) = try next()
        return try object.integer(type) { path(index) }
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (object, index) = try next()
        if let kind = ScalarKind(T.self) { return try object.scalar(kind, as: T.self) { path(index) } }
        return try ObjectDecoder(object, path: .index(index, parent: decoder.path)).decodeValue(type)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try nextDecoder().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try nextDecoder().unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder { try nextDecoder() }
}
