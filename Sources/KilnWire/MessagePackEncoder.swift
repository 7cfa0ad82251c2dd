/// Encodes `Encodable` values to MessagePack through msgpack-c's packer, in one pass.
///
/// ```swift
/// let body = try MessagePackEncoder().encode(invocation)
/// ```
///
/// Structs become maps with string keys, in the order their fields are encoded; `nil` optionals
/// are left out. `[UInt8]` becomes a MessagePack bin and ``MessagePackValue`` is written as it is.
///
/// The encoder writes as it goes, so an `encode(to:)` must fill its containers in order: once it
/// writes to a container, the containers it opened after that one are finished. Synthesized
/// conformances always do; one that goes back to a finished container fails with
/// ``WireError/invalidValue(_:path:)`` rather than producing a wrong document.
public struct MessagePackEncoder: Sendable {
    /// Creates an encoder.
    public init() {}

    /// Encodes `value`.
    public func encode<T: Encodable>(_ value: T) throws(WireError) -> [UInt8] {
        let writer = MessagePackWriter()
        do {
            try ValueEncoder(writer: writer, parentID: MessagePackWriter.rootID, parent: nil, key: .none)
                .encodeValue(value)
        } catch {
            throw WireError(translating: error)
        }
        return try writer.finish()
    }

    /// Encodes a free-form value.
    public func encode(_ value: MessagePackValue) throws(WireError) -> [UInt8] {
        let writer = MessagePackWriter()
        _ = writer.claimValueSlot(in: MessagePackWriter.rootID)
        writer.write(value)
        return try writer.finish()
    }
}

/// One step of a coding path, kept inline so that nested values cost no allocation for it.
enum PathComponent {
    case none
    case name(String)
    case index(Int)
}

/// The `Encoder` for one value: it writes into the slot its parent container claimed for it.
final class ValueEncoder: Encoder {
    let writer: MessagePackWriter
    /// The container this value belongs to, or ``MessagePackWriter/rootID``.
    let parentID: Int
    let parent: ValueEncoder?
    let key: PathComponent
    private var containerID: Int?
    private var containerIsMap = false
    private var wroteValue = false

    init(writer: MessagePackWriter, parentID: Int, parent: ValueEncoder?, key: PathComponent) {
        self.writer = writer
        self.parentID = parentID
        self.parent = parent
        self.key = key
    }

    var userInfo: [CodingUserInfoKey: Any] { [:] }

    var codingPath: [any CodingKey] {
        var keys: [any CodingKey] = []
        var node: ValueEncoder? = self
        while let current = node {
            switch current.key {
            case .none: break
            case .name(let name): keys.append(IndexOrNameKey(stringValue: name))
            case .index(let index): keys.append(IndexOrNameKey(intValue: index))
            }
            node = current.parent
        }
        return keys.reversed()
    }

    var path: String { codingPath.dottedPath }

    /// Takes this value's slot for a scalar, or reports why it cannot.
    private func claimSlot() -> Bool {
        guard !wroteValue, containerID == nil, writer.claimValueSlot(in: parentID) else {
            writer.fail("a value was written out of order or twice", path: path)
            return false
        }
        wroteValue = true
        return true
    }

    /// The id of this value's container, opening it on first use.
    private func container(isMap: Bool) -> Int {
        if let containerID, containerIsMap == isMap { return containerID }
        guard !wroteValue, containerID == nil, writer.claimValueSlot(in: parentID) else {
            writer.fail("a container was requested after this value was written", path: path)
            return MessagePackWriter.invalidID
        }
        let id = writer.openContainer(isMap: isMap)
        containerID = id
        containerIsMap = isMap
        return id
    }

    /// Called once the value's `encode(to:)` returned: a value that wrote nothing is an empty map.
    func finishValue() {
        if containerID == nil, !wroteValue, claimSlot() { writer.writeMapHeader(count: 0) }
    }

    /// Encodes `value` into this slot, taking the fast paths for scalars, bytes, free-form
    /// values and collections of scalars.
    func encodeValue<T: Encodable>(_ value: T) throws {
        if let kind = ScalarKind(T.self) {
            if claimSlot() { writer.write(scalar: value, kind) }
            return
        }
        let id = ObjectIdentifier(T.self)
        if id == SpecialTypes.value {
            if claimSlot() { writer.write(value as! MessagePackValue) }
            return
        }
        if id == SpecialTypes.bytes {
            if claimSlot() { writer.write(binary: value as! [UInt8]) }
            return
        }
        if let kind = CollectionKind(T.self) {
            if claimSlot() { writer.write(collection: value, kind) }
            return
        }
        try value.encode(to: self)
        finishValue()
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(MapEncodingContainer(encoder: self, id: container(isMap: true)))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        ArrayEncodingContainer(encoder: self, id: container(isMap: false))
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { self }
}

extension ValueEncoder: SingleValueEncodingContainer {
    func encodeNil() { if claimSlot() { writer.writeNil() } }
    func encode(_ value: Bool) { if claimSlot() { writer.write(value) } }
    func encode(_ value: String) { if claimSlot() { writer.write(value) } }
    func encode(_ value: Double) { if claimSlot() { writer.write(value) } }
    func encode(_ value: Float) { if claimSlot() { writer.write(value) } }
    func encode(_ value: Int) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: Int8) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: Int16) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: Int32) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: Int64) { if claimSlot() { writer.write(value) } }
    func encode(_ value: UInt) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: UInt8) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: UInt16) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: UInt32) { if claimSlot() { writer.write(integer: value) } }
    func encode(_ value: UInt64) { if claimSlot() { writer.write(value) } }
    func encode<T: Encodable>(_ value: T) throws { try encodeValue(value) }
}

/// Writes the entries of a map: each key, then its value in place or through a child encoder.
struct MapEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: ValueEncoder
    let id: Int

    var codingPath: [any CodingKey] { encoder.codingPath }
    private var writer: MessagePackWriter { encoder.writer }

    /// Writes `key` and leaves the slot for its value to a child encoder; `false` when out of order.
    private func entry(_ key: Key) -> Bool {
        guard writer.beginEntry(in: id) else {
            writer.fail("key '\(key.stringValue)' was written after its map was finished", path: encoder.path)
            return false
        }
        writer.write(key.stringValue)
        return true
    }

    /// Writes `key` and then, in place, a scalar.
    private func scalar(_ key: Key, _ write: () -> Void) {
        guard writer.beginScalarEntry(in: id) else {
            writer.fail("key '\(key.stringValue)' was written after its map was finished", path: encoder.path)
            return
        }
        writer.write(key.stringValue)
        write()
    }

    private func child(_ key: Key) -> ValueEncoder {
        ValueEncoder(writer: writer, parentID: id, parent: encoder, key: .name(key.stringValue))
    }

    mutating func encodeNil(forKey key: Key) { scalar(key) { writer.writeNil() } }
    mutating func encode(_ value: Bool, forKey key: Key) { scalar(key) { writer.write(value) } }
    mutating func encode(_ value: String, forKey key: Key) { scalar(key) { writer.write(value) } }
    mutating func encode(_ value: Double, forKey key: Key) { scalar(key) { writer.write(value) } }
    mutating func encode(_ value: Float, forKey key: Key) { scalar(key) { writer.write(value) } }
    mutating func encode(_ value: Int, forKey key: Key) { scalar(key) { writer.write(integer: value) } }
    mutating func encode(_ value: Int32, forKey key: Key) { scalar(key) { writer.write(integer: value) } }
    mutating func encode(_ value: Int64, forKey key: Key) { scalar(key) { writer.write(value) } }
    mutating func encode(_ value: UInt32, forKey key: Key) { scalar(key) { writer.write(integer: value) } }
    mutating func encode(_ value: UInt64, forKey key: Key) { scalar(key) { writer.write(value) } }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        guard entry(key) else { return }
        try child(key).encodeValue(value)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        _ = entry(key)
        return child(key).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        _ = entry(key)
        return child(key).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let name = IndexOrNameKey.superKey.stringValue
        if writer.beginEntry(in: id) {
            writer.write(name)
        } else {
            writer.fail("key '\(name)' was written after its map was finished", path: encoder.path)
        }
        return ValueEncoder(writer: writer, parentID: id, parent: encoder, key: .name(name))
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        _ = entry(key)
        return child(key)
    }
}

/// Writes the elements of an array, in place or through a child encoder.
struct ArrayEncodingContainer: UnkeyedEncodingContainer {
    let encoder: ValueEncoder
    let id: Int
    private(set) var count = 0

    init(encoder: ValueEncoder, id: Int) {
        self.encoder = encoder
        self.id = id
    }

    var codingPath: [any CodingKey] { encoder.codingPath }
    private var writer: MessagePackWriter { encoder.writer }

    /// Claims the next slot; `false` when out of order.
    private mutating func slot() -> Bool {
        guard writer.beginEntry(in: id) else {
            writer.fail("element \(count) was written after its array was finished", path: encoder.path)
            return false
        }
        count += 1
        return true
    }

    private mutating func scalar(_ write: (MessagePackWriter) -> Void) {
        guard writer.beginScalarEntry(in: id) else {
            writer.fail("element \(count) was written after its array was finished", path: encoder.path)
            return
        }
        count += 1
        write(writer)
    }

    private mutating func child() -> ValueEncoder? {
        guard slot() else { return nil }
        return ValueEncoder(writer: writer, parentID: id, parent: encoder, key: .index(count - 1))
    }

    mutating func encodeNil() { scalar { $0.writeNil() } }
    mutating func encode(_ value: Bool) { scalar { $0.write(value) } }
    mutating func encode(_ value: String) { scalar { $0.write(value) } }
    mutating func encode(_ value: Double) { scalar { $0.write(value) } }
    mutating func encode(_ value: Int) { scalar { $0.write(integer: value) } }
    mutating func encode(_ value: Int64) { scalar { $0.write(value) } }
    mutating func encode(_ value: UInt8) { scalar { $0.write(integer: value) } }
    mutating func encode(_ value: UInt64) { scalar { $0.write(value) } }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try child()?.encodeValue(value)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type
    ) -> KeyedEncodingContainer<NestedKey> {
        let nested = child() ?? ValueEncoder(writer: writer, parentID: MessagePackWriter.invalidID, parent: encoder, key: .none)
        return nested.container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let nested = child() ?? ValueEncoder(writer: writer, parentID: MessagePackWriter.invalidID, parent: encoder, key: .none)
        return nested.unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        child() ?? ValueEncoder(writer: writer, parentID: MessagePackWriter.invalidID, parent: encoder, key: .none)
    }
}
