import KilnWire
import Testing

@Suite("MessagePackValue round trips through msgpack-c")
struct ValueRoundTripTests {
    let encoder = MessagePackEncoder()
    let decoder = MessagePackDecoder()

    func roundTrip(_ value: MessagePackValue) throws -> MessagePackValue {
        try decoder.decodeValue(from: try encoder.encode(value))
    }

    @Test(arguments: [
        MessagePackValue.nil, .bool(true), .bool(false),
        .uint(0), .uint(127), .uint(128), .uint(255), .uint(256), .uint(65_535), .uint(65_536),
        .uint(UInt64(UInt32.max)), .uint(UInt64(UInt32.max) + 1), .uint(.max),
        .int(-1), .int(-32), .int(-33), .int(-128), .int(-129), .int(-32_768), .int(-32_769),
        .int(Int64(Int32.min)), .int(Int64(Int32.min) - 1), .int(.min),
        .float(1.5), .float(-0.0), .float(.infinity), .float(.nan), .double(3.141592653589793), .double(-1e300),
        .string(""), .string("grüße 🔥"), .binary([]), .binary([0, 1, 2, 255]),
        .ext(type: 1, data: [1]), .ext(type: -1, data: [0, 0, 0, 0]),
    ])
    func scalars(_ value: MessagePackValue) throws {
        let decoded = try roundTrip(value)
        #expect(decoded == value)
        #expect(decoded.typeName == value.typeName)
    }

    @Test func longStringsBinariesAndExtsUseWideHeaders() throws {
        for value in [
            MessagePackValue.string(String(repeating: "x", count: 70_000)), .string(String(repeating: "y", count: 300)),
            .binary([UInt8](repeating: 7, count: 70_000)), .binary([UInt8](repeating: 8, count: 300)),
            .ext(type: 127, data: [UInt8](repeating: 9, count: 300)), .ext(type: 5, data: [UInt8](repeating: 1, count: 70_000)),
        ] {
            let decoded = try roundTrip(value)
            #expect(decoded == value, "\(value.typeName) did not round-trip")
        }
    }

    @Test func integersKeepTheirSignClassAndCompareByValue() throws {
        #expect(try roundTrip(.int(5)) == .uint(5))
        if case .uint = try roundTrip(.int(5)) {} else { Issue.record("non-negative ints decode as uint") }
        if case .int(let value) = try roundTrip(.int(-5)) { #expect(value == -5) } else { Issue.record("negative ints decode as int") }
        #expect(MessagePackValue.int(-1) != .uint(UInt64.max))
    }

    @Test func float32StaysFloat32() throws {
        let encoded = try encoder.encode(MessagePackValue.float(1.5))
        #expect(encoded == [0xca, 0x3f, 0xc0, 0x00, 0x00])
        #expect(try roundTrip(.float(1.5)) == .float(1.5))
    }

    @Test func containersKeepOrderAndAnyKeyType() throws {
        let value: MessagePackValue = .map([
            (key: .string("z"), value: .array([.uint(1), .string("two"), .array([.double(3.5), .nil])])),
            (key: .uint(7), value: .binary([1, 2])),
            (key: .array([.bool(true)]), value: .map([])),
            (key: .string("a"), value: .ext(type: 3, data: [4])),
        ])
        let decoded = try roundTrip(value)
        #expect(decoded == value)
        #expect(decoded["z"]?[1] == .string("two"))
    }

    @Test func largeContainersUseWideHeaders() throws {
        let array = MessagePackValue.array((0..<70_000).map { .uint(UInt64($0)) })
        #expect(try roundTrip(array) == array)
        let map = MessagePackValue.map((0..<20).map { (key: .string("k\($0)"), value: .int(-Int64($0) - 1)) })
        #expect(try roundTrip(map) == map)
    }

    @Test func deepNestingUpToTheLimitDecodes() throws {
        var value = MessagePackValue.string("core")
        for _ in 0..<WireLimits.default.maxDepth { value = .array([value]) }
        #expect(try roundTrip(value) == value)
    }
}

@Suite("Depth ceiling of msgpack-c")
struct DepthCeilingTests {
    func nested(_ depth: Int) -> MessagePackValue {
        var value = MessagePackValue.nil
        for _ in 0..<depth { value = .array([value]) }
        return value
    }

    @Test func theDeepestLimitStillUnpacks() throws {
        let decoder = MessagePackDecoder(limits: WireLimits(maxDepth: 1_000))
        #expect(decoder.limits.maxDepth == WireLimits.unpackerDepthCeiling)
        let deepest = nested(WireLimits.unpackerDepthCeiling)
        #expect(try decoder.decodeValue(from: try MessagePackEncoder().encode(deepest)) == deepest)
        let tooDeep = try MessagePackEncoder().encode(nested(WireLimits.unpackerDepthCeiling + 1))
        #expect(throws: WireError.self) { try decoder.decodeValue(from: tooDeep) }
    }
}

@Suite("Sorted keys")
struct SortedKeysTests {
    @Test func equalDictionariesEncodeAlikeOnceTheirKeysAreSorted() throws {
        let one: MessagePackValue = .map([(key: "b", value: 1), (key: "a", value: .map([(key: "z", value: 1), (key: "y", value: 2)])), (key: .uint(3), value: 0)])
        let other: MessagePackValue = .map([(key: .uint(3), value: 0), (key: "a", value: .map([(key: "y", value: 2), (key: "z", value: 1)])), (key: "b", value: 1)])
        #expect(try MessagePackEncoder().encode(one.sortingKeys()) == MessagePackEncoder().encode(other.sortingKeys()))
        guard case .map(let entries) = one.sortingKeys() else { Issue.record("not a map"); return }
        #expect(entries.map(\.key) == ["a", "b", .uint(3)])
    }
}
