import KilnWire
import Testing

/// The frames between the agent and a serve-mode runtime.
@Suite("Serve-mode frames")
struct ServeFrameTests {
    let encoder = MessagePackEncoder()

    @Test func aCallMadeFromAnExecPayloadCarriesItsArgsContextIdAndDeadline() throws {
        let payload = try encoder.encode(["args": ["text": "hi", "n": 3], "context": ["locals": ["k": 1]]] as MessagePackValue)
        let call = try ServeCall(body: ServeCall.body(payload: payload, id: "inv-7", deadlineMs: 250))
        #expect(call == ServeCall(id: "inv-7", args: ["text": "hi", "n": 3], context: ["locals": ["k": 1]], deadlineMs: 250))
    }

    @Test func splicingWidensTheMapHeader() throws {
        // 14 entries + 2 no longer fit a fixmap; 65,534 + 2 no longer fit a map16.
        for count in [0, 13, 14, 65_533, 65_534] {
            var entries: [(key: MessagePackValue, value: MessagePackValue)] = [(key: "args", value: .uint(UInt64(count)))]
            for index in 0..<count { entries.append((key: .string("k\(index)"), value: .nil)) }
            let body = try ServeCall.body(payload: encoder.encode(.map(entries)), id: "x", deadlineMs: 1)
            let decoded = try MessagePackDecoder().decodeValue(from: body)
            guard case .map(let all) = decoded else { Issue.record("not a map"); continue }
            #expect(all.count == count + 3)
            #expect(decoded["args"] == .uint(UInt64(count)))
            #expect(decoded["id"] == "x")
            #expect(decoded["deadline_ms"] == 1)
        }
    }

    @Test func anEmptyPayloadIsACallWithNilArgs() throws {
        let call = try ServeCall(body: ServeCall.body(payload: [], id: "e", deadlineMs: 9))
        #expect(call == ServeCall(id: "e", args: .nil, deadlineMs: 9))
    }

    @Test func aPayloadThatIsNotAMapIsRefused() {
        #expect(throws: WireError.self) { try ServeCall.body(payload: [0x93, 1, 2, 3], id: "x", deadlineMs: 1) }
        #expect(throws: WireError.self) { try ServeCall.body(payload: [0xde, 0], id: "x", deadlineMs: 1) }
    }

    @Test func answersRoundTripAndBecomeTheExecOutput() throws {
        let answer = ServeAnswer(id: "a", output: ["words": 2], context: ["locals": ["calls": 1]])
        #expect(try ServeAnswer(body: answer.body()) == answer)
        #expect(try MessagePackDecoder().decodeValue(from: answer.methodOutput()) == ["output": ["words": 2], "context": ["locals": ["calls": 1]]])
        let bare = ServeAnswer(id: "b", output: "x")
        #expect(try MessagePackDecoder().decodeValue(from: bare.methodOutput()) == ["output": "x"])
    }

    @Test func anAnswerCarriesAnErrorOrNothing() throws {
        let failed = ServeAnswer(id: "f", error: "boom")
        #expect(try ServeAnswer(body: failed.body()) == failed)
        let nilError = try encoder.encode(["id": "n", "output": 1, "error": .nil] as MessagePackValue)
        #expect(try ServeAnswer(body: nilError).error == nil)
        let badError = try encoder.encode(["id": "n", "error": 5] as MessagePackValue)
        #expect(throws: WireError.self) { try ServeAnswer(body: badError) }
        let noID = try encoder.encode(["output": 1] as MessagePackValue)
        #expect(throws: WireError.missingKey("id", path: "")) { try ServeAnswer(body: noID) }
    }

    @Test(arguments: [
        ServeAnswer(id: "a", output: ["words": 2], context: ["locals": ["calls": 1], "state": .binary([1, 2])]),
        ServeAnswer(id: "b", output: "x"),
        ServeAnswer(id: String(repeating: "long-id-", count: 40), output: .binary(Array(repeating: 7, count: 70_000))),
        ServeAnswer(id: "f", error: "boom"),
    ])
    func theFastPathAgreesWithTheDecoder(answer: ServeAnswer) throws {
        let body = try answer.body()
        let fields = try ServeAnswerFields(body: body)
        #expect(fields.id == answer.id)
        #expect(fields.error == answer.error)
        #expect(try MessagePackDecoder().decodeValue(from: fields.methodOutput) == MessagePackDecoder().decodeValue(from: answer.methodOutput()))
    }

    @Test func theFastPathKeepsUnknownKeysOutAndRefusesBrokenAnswers() throws {
        let extra = try encoder.encode(MessagePackValue.map([
            (key: "id", value: "x"), (key: "output", value: 1), (key: "context", value: .nil), (key: "trace", value: "t"),
            (key: .uint(5), value: .uint(6)),
        ]))
        let fields = try ServeAnswerFields(body: extra)
        #expect(try MessagePackDecoder().decodeValue(from: fields.methodOutput) == ["output": 1])
        let noID = try encoder.encode(["output": 1] as MessagePackValue)
        #expect(throws: WireError.missingKey("id", path: "")) { try ServeAnswerFields(body: noID) }
        let numericID = try encoder.encode(["id": 1] as MessagePackValue)
        #expect(throws: WireError.self) { try ServeAnswerFields(body: numericID) }
        #expect(throws: WireError.self) { try ServeAnswerFields(body: [0x81, 0xa2, 0x69, 0x64]) }  // truncated
        #expect(throws: WireError.self) { try ServeAnswerFields(body: noID + [0xc0]) }  // trailing
        #expect(throws: WireError.self) { try ServeAnswerFields(body: [0x91, 0x01]) }  // not a map
        let deep = try encoder.encode(["id": "d", "output": .array([.array([.array([1])])])] as MessagePackValue)
        #expect(throws: WireError.self) { try ServeAnswerFields(body: deep, limits: WireLimits(maxDepth: 2)) }
    }

    @Test func splicedCallsMatchEncodedOnes() throws {
        for (id, deadline) in [("i", UInt64(0)), (String(repeating: "x", count: 40), 300), (String(repeating: "y", count: 300), 70_000), ("z", UInt64.max)] {
            let payload = try encoder.encode(["args": ["n": 1]] as MessagePackValue)
            let spliced = try ServeCall(body: ServeCall.body(payload: payload, id: id, deadlineMs: deadline))
            #expect(spliced == ServeCall(id: id, args: ["n": 1], deadlineMs: deadline))
        }
    }

    @Test func theReadyFrameIsTheMapReadyTrue() throws {
        #expect(try MessagePackDecoder().decodeValue(from: ServeProtocol.readyBody) == ["ready": true])
        #expect(ServeProtocol.readyBody == (try encoder.encode(["ready": true] as MessagePackValue)))
    }
}
