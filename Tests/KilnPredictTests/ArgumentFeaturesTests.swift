import KilnPredict
import KilnWire
import Testing

@Suite("Argument features")
struct ArgumentFeaturesTests {
    @Test func keepsSaneNumbersAndLengths() {
        let features = ArgumentFeatures.extract([
            "ms": 30, "scale": .double(0.5), "ratio": .float(1.5), "delta": .int(-40), "text": "hello",
            "data": .binary([1, 2, 3]), "items": .array(Array(repeating: .nil, count: 10_000)), "options": ["a": 1],
        ])
        #expect(features == [
            "ms": 30, "scale": 0.5, "ratio": 1.5, "delta": -40, "text.len": 5, "data.len": 3, "items.len": 10_000, "options.len": 1,
        ])
    }

    @Test func dropsWhatIsNotFiniteOrAbsurd() {
        let features = ArgumentFeatures.extract([
            "f32inf": .float(.infinity), "f32nan": .float(.nan), "f64inf": .double(-.infinity), "f64nan": .double(.nan),
            "huge": .uint(1 << 63), "hugeNegative": .int(.min), "big": .double(1e300), "fine": .uint(1 << 40),
        ])
        #expect(features == ["fine": Double(1 << 40)])
    }

    @Test func takesOnlyPlainKeysAndAtMostEightOfThem() {
        var entries: [(key: MessagePackValue, value: MessagePackValue)] = [
            (.string("semi;colon"), 1), (.string("a=b"), 1), (.string(String(repeating: "k", count: 65)), 1), (.string(""), 1),
            (.string("new\nline"), 1), (.uint(7), 1),
        ]
        for index in (0..<1_000).reversed() { entries.append((.string("k\(1_000 + index)"), .uint(UInt64(index)))) }
        let features = ArgumentFeatures.extract(.map(entries))
        #expect(features.keys.sorted() == (1_000..<1_008).map { "k\($0)" })
        #expect(ArgumentFeatures.extract(.array([1, 2])).isEmpty)
    }
}
