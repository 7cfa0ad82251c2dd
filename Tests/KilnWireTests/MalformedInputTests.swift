import KilnWire
import Testing

/// Every class of bad input gets a typed error; none crashes or allocates by a length prefix.
@Suite("Malformed input")
struct MalformedInputTests {
    let decoder = MessagePackDecoder()

    func decodeInvocation(_ bytes: [UInt8]) throws -> Invocation {
        try decoder.decode(Invocation.self, from: bytes)
    }

    @Test func truncatedInput() {
        let body = try! MessagePackEncoder().encode(Invocation(id: "abc", method: "echo", args: "hello"))
        for length in 0..<body.count {
            #expect(throws: WireError.self) { try decodeInvocation(Array(body.prefix(length))) }
        }
        #expect(throws: WireError.truncated(offset: 4)) { try decodeInvocation([0x82, 0xa1, 0x76, 0x01, 0xa6]) }
    }

    @Test func theReservedByte() {
        #expect(throws: WireError.invalidByte(0xc1, offset: 0)) { try decoder.decodeValue(from: [0xc1]) }
        #expect(throws: WireError.invalidByte(0xc1, offset: 4)) {
            try decodeInvocation([0x82, 0xa1, 0x76, 0x01, 0xc1, 0xa6])
        }
    }

    /// A method's name becomes a result's routing key, a metric label and a log field; its id
    /// the result's AMQP message_id. Neither may be anything a producer likes.
    @Test func methodNamesAndIdsAreHeldToWhatResultsCanCarry() throws {
        func decoded(_ fields: MessagePackValue) throws -> Invocation {
            try MessagePackEncoder().encode(fields).withUnsafeBytes { try Invocation.decode(body: $0, messageID: nil) }
        }
        for method in [String(repeating: "m", count: 65), String(repeating: "m", count: 5_000), "a b", "echo\n", "ünïcode", "a;b", ""] {
            #expect(throws: WireError.self, "method \(method.prefix(20))") { try decoded(["v": 1, "id": "x", "method": .string(method)]) }
        }
        for id in [String(repeating: "i", count: 256), String(repeating: "i", count: 65_536), "line\nbreak", "tab\there"] {
            #expect(throws: WireError.self, "id \(id.prefix(20))") { try decoded(["v": 1, "id": .string(id), "method": "echo"]) }
        }
        #expect(try decoded(["v": 1, "id": .string(String(repeating: "i", count: 255)), "method": .string(String(repeating: "m", count: 64))]).method.count == 64)
        #expect(try decoded(["v": 1, "id": "ïd-ünïcode", "method": "img.resize_v2-b"]).id == "ïd-ünïcode")
    }

    @Test func wrongTypes() throws {
        let body = try MessagePackEncoder().encode(["v": 1, "id": "x", "method": 42] as MessagePackValue)
        #expect(throws: WireError.typeMismatch(expected: "str", found: "int", path: "method")) {
            try decodeInvocation(body)
        }
        let nested = try MessagePackEncoder().encode(
            ["v": 1, "id": "x", "method": "m", "resources": ["vcpus": "two"]] as MessagePackValue)
        #expect(throws: WireError.typeMismatch(expected: "int", found: "str", path: "resources.vcpus")) {
            try decodeInvocation(nested)
        }
        let negative = try MessagePackEncoder().encode(
            ["v": 1, "id": "x", "method": "m", "deadline_ms": -5] as MessagePackValue)
        #expect(throws: WireError.invalidValue("integer does not fit UInt64", path: "deadline_ms")) {
            try decodeInvocation(negative)
        }
        #expect(throws: WireError.typeMismatch(expected: "map", found: "array", path: "")) {
            try decodeInvocation([0x90])
        }
    }

    @Test func oversizedLengthPrefixes() {
        // Each claims far more than the body holds; none may allocate for the claim.
        #expect(throws: WireError.limitExceeded(.containerLength, actual: Int(UInt32.max), maximum: 1 << 20, offset: 0)) {
            try decoder.decodeValue(from: [0xdd, 0xff, 0xff, 0xff, 0xff])
        }
        #expect(throws: WireError.limitExceeded(.containerLength, actual: Int(UInt32.max), maximum: 1 << 20, offset: 0)) {
            try decoder.decodeValue(from: [0xdf, 0xff, 0xff, 0xff, 0xff])
        }
        #expect(throws: WireError.truncated(offset: 0)) {
            try decoder.decodeValue(from: [0xdd, 0x00, 0x00, 0x10, 0x00, 0x00])
        }
        #expect(throws: WireError.limitExceeded(.stringBytes, actual: 0x7fff_ffff, maximum: 4 << 20, offset: 0)) {
            try decoder.decodeValue(from: [0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61])
        }
        #expect(throws: WireError.truncated(offset: 0)) {
            try decoder.decodeValue(from: [0xc6, 0x00, 0x01, 0x00, 0x00, 0x61])
        }
        #expect(throws: WireError.truncated(offset: 0)) { try decoder.decodeValue(from: [0xc9, 0x00, 0x00, 0x00, 0x05, 0x01]) }
    }

    @Test func depthBombs() {
        let arrays = [UInt8](repeating: 0x91, count: 100_000) + [0xc0]
        #expect(throws: WireError.limitExceeded(.depth, actual: 25, maximum: 24, offset: 24)) {
            try decoder.decodeValue(from: arrays)
        }
        let maps = [UInt8]((0..<1_000).flatMap { _ in [0x81, 0xc0] }) + [0xc0]
        #expect(throws: WireError.limitExceeded(.depth, actual: 25, maximum: 24, offset: 48)) {
            try decoder.decodeValue(from: maps)
        }
    }

    @Test func configuredLimitsApply() throws {
        let strict = MessagePackDecoder(limits: WireLimits(
            maxBodyBytes: 64, maxDepth: 2, maxContainerLength: 3, maxTotalElements: 6, maxStringBytes: 4, maxBinaryBytes: 2))
        #expect(throws: WireError.limitExceeded(.bodyBytes, actual: 65, maximum: 64, offset: 0)) {
            try strict.decodeValue(from: [0xc4, 63] + [UInt8](repeating: 0, count: 63))
        }
        #expect(throws: WireError.limitExceeded(.binaryBytes, actual: 3, maximum: 2, offset: 0)) {
            try strict.decodeValue(from: [0xc4, 3, 1, 2, 3])
        }
        #expect(throws: WireError.limitExceeded(.stringBytes, actual: 5, maximum: 4, offset: 0)) {
            try strict.decodeValue(from: [0xa5] + Array("hello".utf8))
        }
        #expect(throws: WireError.limitExceeded(.containerLength, actual: 4, maximum: 3, offset: 0)) {
            try strict.decodeValue(from: [0x94, 1, 2, 3, 4])
        }
        #expect(throws: WireError.limitExceeded(.totalElements, actual: 7, maximum: 6, offset: 6)) {
            try strict.decodeValue(from: [0x93, 0x93, 1, 2, 3, 0x91, 1])
        }
        #expect(throws: WireError.limitExceeded(.depth, actual: 3, maximum: 2, offset: 2)) {
            try strict.decodeValue(from: [0x91, 0x91, 0x91, 0xc0])
        }
        #expect(try strict.decodeValue(from: [0x92, 0x91, 0xa2, 0x68, 0x69, 0xc3]) == [["hi"], true])
    }

    @Test func trailingBytesAndInvalidUTF8() {
        #expect(throws: WireError.trailingBytes(count: 2, offset: 1)) { try decoder.decodeValue(from: [0xc0, 0xc0, 0xc0]) }
        #expect(throws: WireError.invalidUTF8(path: "method")) {
            try decodeInvocation([0x82, 0xa1, 0x76, 0x01, 0xa6] + Array("method".utf8) + [0xa2, 0xc3, 0x28])
        }
        #expect(throws: WireError.invalidUTF8(path: "args.k")) {
            try decoder.decode(Invocation.self, from: [0x83, 0xa1, 0x76, 0x01, 0xa6] + Array("method".utf8) + [0xa1, 0x6d]
                + [0xa4] + Array("args".utf8) + [0x81, 0xa1, 0x6b, 0xa1, 0xff])
        }
    }

    @Test func unknownEnumValuesNameTheField() throws {
        let body = try MessagePackEncoder().encode(["v": 1, "type": "teleport"] as MessagePackValue)
        #expect(throws: WireError.invalidValue("unknown guest frame type 'teleport'", path: "type")) {
            try GuestFrame.decode(body: body)
        }
    }

    @Test func oversizedFramePrefixFailsBeforeTheBodyArrives() {
        var buffer = FrameBuffer(maxFrameBytes: 1_024)
        buffer.append([0xff, 0xff, 0xff, 0xff])
        #expect(throws: WireError.limitExceeded(.frameBytes, actual: Int(UInt32.max), maximum: 1_024, offset: 0)) {
            try buffer.nextFrame()
        }
    }

    @Test func errorsReadWell() {
        let error = WireError.limitExceeded(.depth, actual: 25, maximum: 24, offset: 24)
        #expect(error.description == "nesting depth 25 exceeds the limit of 24 (at offset 24)")
        #expect(WireError.typeMismatch(expected: "str", found: "int", path: "method").description
            == "expected str at method, found int")
    }
}
