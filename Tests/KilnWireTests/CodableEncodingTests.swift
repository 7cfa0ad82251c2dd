import KilnWire
import Testing

/// The one-pass encoder: header widening, every Codable container shape, and in-order writing.
@Suite("Codable encoding")
struct CodableEncodingTests {
    let encoder = MessagePackEncoder()
    let decoder = MessagePackDecoder(limits: WireLimits(maxContainerLength: 1 << 20))

    struct Shapes: Codable, Equatable {
        var nested: [[Int]]
        var counts: [String: Int]
        var small: [Int8]
        var wide: [UInt16]
        var optional: Int?
        var missing: String?
        var flag: Bool
        var ratio: Float
    }

    @Test func headersWidenPastFifteenAndPastSixtyFiveThousandEntries() throws {
        let shapes = Shapes(
            nested: (0..<20).map { Array(0..<$0) },
            counts: Dictionary(uniqueKeysWithValues: (0..<40).map { ("k\($0)", $0) }),
            small: (0..<70_000).map { Int8(truncatingIfNeeded: $0) },
            wide: (0..<16).map { UInt16($0 * 1_000) },
            optional: 5, missing: nil, flag: true, ratio: 0.5
        )
        let body = try encoder.encode(shapes)
        #expect(try decoder.decode(Shapes.self, from: body) == shapes)
        let value = try decoder.decodeValue(from: body)
        #expect(value["missing"] == nil)
        #expect(value["ratio"] == .float(0.5))
        if case .array(let small) = value["small"] { #expect(small.count == 70_000) } else { Issue.record("small is not an array") }
    }

    struct Derived: Codable, Equatable {
        var base: Int
        var extra: String

        enum CodingKeys: String, CodingKey { case extra }

        init(base: Int, extra: String) {
            self.base = base
            self.extra = extra
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            extra = try container.decode(String.self, forKey: .extra)
            base = try container.superDecoder().singleValueContainer().decode(Int.self)
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(extra, forKey: .extra)
            var base = container.superEncoder().singleValueContainer()
            try base.encode(self.base)
        }
    }

    @Test func superEncodersWriteUnderTheSuperKey() throws {
        let value = Derived(base: 7, extra: "x")
        let body = try encoder.encode(value)
        #expect(try decoder.decodeValue(from: body) == ["extra": "x", "super": 7])
        #expect(try decoder.decode(Derived.self, from: body) == value)
    }

    struct NothingEncoded: Encodable {
        func encode(to encoder: any Encoder) throws {}
    }

    @Test func aValueThatEncodesNothingIsAnEmptyMap() throws {
        #expect(try decoder.decodeValue(from: try encoder.encode(["a": NothingEncoded()])) == ["a": .map([])])
    }

    struct OutOfOrder: Encodable {
        enum Keys: String, CodingKey { case first, second, late }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            var first = container.nestedUnkeyedContainer(forKey: .first)
            var second = container.nestedUnkeyedContainer(forKey: .second)
            try second.encode(2)
            try first.encode(1)
        }
    }

    @Test func writingToAFinishedContainerFailsInsteadOfCorrupting() {
        #expect(throws: WireError.invalidValue("element 0 was written after its array was finished", path: "first")) {
            try encoder.encode(OutOfOrder())
        }
    }

    struct TwoValues: Encodable {
        func encode(to encoder: any Encoder) throws {
            var single = encoder.singleValueContainer()
            try single.encode(1)
            try single.encode(2)
        }
    }

    @Test func aSecondSingleValueFails() {
        #expect(throws: WireError.invalidValue("a value was written out of order or twice", path: "")) {
            try encoder.encode(TwoValues())
        }
    }
}
