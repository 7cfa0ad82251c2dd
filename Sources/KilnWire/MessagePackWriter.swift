import CMsgPack
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes MessagePack through msgpack-c's packer into one msgpack-c buffer, in a single pass.
///
/// Codable reveals a container's size only once it is filled, so each map or array gets a
/// one-byte header when it opens and the real header when it closes; a container with more than
/// 15 entries widens its header then. Containers close in the order Codable fills them: a write
/// to a container first closes every container opened after it.
final class MessagePackWriter {
    private struct OpenContainer {
        let id: Int
        let headerOffset: Int
        let isMap: Bool
        var count: Int
        /// A key (or array slot) was written and its value has not been yet.
        var awaitingValue: Bool
    }

    /// The id of the document's top level, which holds exactly one value.
    static let rootID = -1
    /// The id handed out for a container that could not be opened; every write to it fails.
    static let invalidID = -2

    @exclusivity(unchecked) private var open: [OpenContainer] = []
    @exclusivity(unchecked) private var nextID = 0
    @exclusivity(unchecked) private var rootWritten = false
    /// Why the value could not be written in one pass, if it could not: the first problem.
    @exclusivity(unchecked) private(set) var failure: WireError?
    private let buffer: UnsafeMutablePointer<msgpack_sbuffer>
    private let packer: UnsafeMutablePointer<msgpack_packer>

    init() {
        buffer = .allocate(capacity: 1)
        msgpack_sbuffer_init(buffer)
        packer = .allocate(capacity: 1)
        kiln_msgpack_packer_init_sbuffer(packer, buffer)
    }

    deinit {
        msgpack_sbuffer_destroy(buffer)
        buffer.deallocate()
        packer.deallocate()
    }

    /// Bytes written so far.
    private var size: Int { buffer.pointee.size }

    /// Records the first problem; the encode fails with it once the value is written.
    func fail(_ reason: @autoclosure () -> String, path: @autoclosure () -> String) {
        if failure == nil { failure = .invalidValue(reason(), path: path()) }
    }

    /// The finished document.
    func finish() throws(WireError) -> [UInt8] {
        while let container = open.popLast() { close(container) }
        if let failure { throw failure }
        guard rootWritten else { throw .invalidValue("nothing was encoded", path: "") }
        return [UInt8](UnsafeRawBufferPointer(start: buffer.pointee.data, count: size))
    }

    // MARK: Container bookkeeping

    /// Closes the containers opened after `id`; `false` when `id` is no longer open.
    private func reach(_ id: Int) -> Bool {
        if let top = open.last, top.id == id { return true }
        while let top = open.last, top.id != id {
            open.removeLast()
            close(top)
        }
        return id == Self.rootID || !open.isEmpty
    }

    /// Starts an entry of container `id`: its key, or its next array slot.
    func beginEntry(in id: Int) -> Bool {
        guard reach(id), id != Self.rootID, !open[open.count - 1].awaitingValue else { return false }
        open[open.count - 1].count += 1
        open[open.count - 1].awaitingValue = true
        return true
    }

    /// Starts an entry of container `id` whose value the caller writes right after its key
    /// (or, in an array, right away).
    func beginScalarEntry(in id: Int) -> Bool {
        guard reach(id), id != Self.rootID, !open[open.count - 1].awaitingValue else { return false }
        open[open.count - 1].count += 1
        return true
    }

    /// Claims the place for one value inside `parentID`: the value of its last entry, or the
    /// top level of the document.
    func claimValueSlot(in parentID: Int) -> Bool {
        guard reach(parentID) else { return false }
        if parentID == Self.rootID {
            guard !rootWritten else { return false }
            rootWritten = true
            return true
        }
        guard open[open.count - 1].awaitingValue else { return false }
        open[open.count - 1].awaitingValue = false
        return true
    }

    /// Opens a map or array in the value slot just claimed; returns its id.
    func openContainer(isMap: Bool) -> Int {
        let id = nextID
        nextID += 1
        open.append(OpenContainer(id: id, headerOffset: size, isMap: isMap, count: 0, awaitingValue: false))
        _ = isMap ? msgpack_pack_map(packer, 0) : msgpack_pack_array(packer, 0)
        return id
    }

    private func close(_ container: OpenContainer) {
        if container.awaitingValue { fail("a key was written without its value", path: "") }
        let count = container.count
        let header = UnsafeMutableRawPointer(buffer.pointee.data!).advanced(by: container.headerOffset)
            .assumingMemoryBound(to: UInt8.self)
        if count <= 15 {
            header.pointee |= UInt8(count)
            return
        }
        guard count <= 0xffff_ffff else {
            fail("a container of \(count) entries is too large for MessagePack", path: "")
            return
        }
        // Widen the one-byte header: grow the buffer, then move the container's body along.
        let width = count <= 0xffff ? 2 : 4
        let bodyOffset = container.headerOffset + 1
        let bodyCount = size - bodyOffset
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: width) { room in
            room.initialize(repeating: 0)
            _ = msgpack_sbuffer_write(buffer, room.baseAddress, width)
        }
        let base = UnsafeMutableRawPointer(buffer.pointee.data!).assumingMemoryBound(to: UInt8.self)
        memmove(base + bodyOffset + width, base + bodyOffset, bodyCount)
        let widened = base + container.headerOffset
        switch (container.isMap, width) {
        case (true, 2): widened.pointee = 0xde
        case (true, _): widened.pointee = 0xdf
        case (false, 2): widened.pointee = 0xdc
        case (false, _): widened.pointee = 0xdd
        }
        for index in 0..<width {
            widened[1 + index] = UInt8(truncatingIfNeeded: count >> (8 * (width - 1 - index)))
        }
    }

    // MARK: Values, through msgpack-c

    func writeNil() { _ = msgpack_pack_nil(packer) }
    func write(_ value: Bool) { _ = value ? msgpack_pack_true(packer) : msgpack_pack_false(packer) }
    func write(_ value: Int64) { _ = msgpack_pack_int64(packer, value) }
    func write(_ value: UInt64) { _ = msgpack_pack_uint64(packer, value) }
    func write(_ value: Float) { _ = msgpack_pack_float(packer, value) }
    func write(_ value: Double) { _ = msgpack_pack_double(packer, value) }

    func write(_ value: String) {
        var string = value
        string.withUTF8 { utf8 in _ = msgpack_pack_str_with_body(packer, utf8.baseAddress, utf8.count) }
    }

    func write(binary bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in _ = msgpack_pack_bin_with_body(packer, raw.baseAddress, raw.count) }
    }

    func writeArrayHeader(count: Int) { _ = msgpack_pack_array(packer, count) }
    func writeMapHeader(count: Int) { _ = msgpack_pack_map(packer, count) }

    func write<T: BinaryInteger>(integer value: T) {
        if value < 0 { write(Int64(value)) } else { write(UInt64(value)) }
    }

    /// Writes a whole ``MessagePackValue``.
    func write(_ value: MessagePackValue) {
        switch value {
        case .nil: writeNil()
        case .bool(let bool): write(bool)
        case .int(let int): write(int)
        case .uint(let uint): write(uint)
        case .float(let float): write(float)
        case .double(let double): write(double)
        case .string(let string): write(string)
        case .binary(let bytes): write(binary: bytes)
        case .ext(let type, let data):
            data.withUnsafeBytes { raw in _ = msgpack_pack_ext_with_body(packer, raw.baseAddress, raw.count, type) }
        case .array(let elements):
            writeArrayHeader(count: elements.count)
            for element in elements { write(element) }
        case .map(let entries):
            writeMapHeader(count: entries.count)
            for entry in entries {
                write(entry.key)
                write(entry.value)
            }
        }
    }
}
