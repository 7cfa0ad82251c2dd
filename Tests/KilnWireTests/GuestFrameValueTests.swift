import KilnWire
import Testing

/// The agent's Codable-free frame path must write and read exactly what the host's Codable path does.
@Suite("Guest frames without Codable")
struct GuestFrameValueTests {
    static let frames: [GuestFrame] = [
        .hello(.init(agentVersion: "0.1.0", uptimeUs: 1_234_567, vcpus: 2, memoryMB: 128)),
        .exec(.init(id: "inv-1", method: "echo", entry: ["/kiln/bin/kiln-examples", "echo"], payload: [0x80, 1, 2],
                    deadlineMs: 5_000)),
        .exec(.init(id: "inv-3", method: "echo", entry: ["kiln:noop"], payload: [], deadlineMs: 1, resetAfter: true)),
        .execBatch(.init(calls: [
            .init(id: "inv-6", method: "echo", entry: ["kiln-examples", "echo"], payload: [0x80], deadlineMs: 100, resetAfter: true),
            .init(id: "inv-7", method: "echo", entry: ["kiln-examples", "echo"], payload: [0x81, 0xa1, 0x61, 1], deadlineMs: 5),
        ])),
        .result(.notRun("inv-7")),
        .result(.init(id: "inv-1", status: .timeout, output: [], exitCode: 137, stderr: "killed", execUs: 9,
                      maxrssKB: 6_800)),
        .result(.init(id: "inv-2", status: .error, output: [1], exitCode: -1, stderr: "", execUs: 0, maxrssKB: 0)),
        .result(.init(id: "inv-3", status: .ok, output: [0x80], exitCode: 0, stderr: "", execUs: 7, maxrssKB: 1, resetPending: true)),
        .result(.init(id: "inv-4", status: .error, output: [], exitCode: 139, stderr: "", execUs: 7, maxrssKB: 1, crashed: true)),
        .result(.init(id: "inv-5", status: .error, output: [], exitCode: 1, stderr: "", execUs: 7, maxrssKB: 1,
                      methodError: "ValueError: no text", runtimeStarted: true)),
        .ping,
        .pong(.init(uptimeUs: UInt64.max, load1: 0.25, memAvailableKB: 100_000)),
        .reset(.init()), .reset(.init(keepRuntime: true)), .resetOK, .shutdown,
        .error(.init(message: "malformed frame")),
    ]

    @Test(arguments: frames)
    func bothPathsWriteTheSameBytes(frame: GuestFrame) throws {
        #expect(try frame.valueFramed() == frame.framed())
    }

    @Test(arguments: frames)
    func bothPathsReadEachOther(frame: GuestFrame) throws {
        let body = Array(try frame.framed().dropFirst(4))
        #expect(try GuestFrame.decodeValue(body: body) == frame)
        #expect(try GuestFrame.decode(body: Array(try frame.valueFramed().dropFirst(4))) == frame)
    }

    @Test func rejectsWhatTheCodablePathRejects() throws {
        let encoder = MessagePackEncoder()
        let missing = try encoder.encode(["v": 1, "type": "exec", "id": "x"] as MessagePackValue)
        #expect(throws: WireError.missingKey("method", path: "")) { try GuestFrame.decodeValue(body: missing) }
        let version = try encoder.encode(["v": 2, "type": "ping"] as MessagePackValue)
        #expect(throws: WireError.unsupportedVersion(2)) { try GuestFrame.decodeValue(body: version) }
        let unknown = try encoder.encode(["v": 1, "type": "reboot"] as MessagePackValue)
        #expect(throws: WireError.self) { try GuestFrame.decodeValue(body: unknown) }
        let wrongType = try encoder.encode(["v": 1, "type": "exec", "id": 5, "method": "m", "entry": [], "payload": .binary([]), "deadline_ms": 1] as MessagePackValue)
        #expect(throws: WireError.typeMismatch(expected: "str", found: "int", path: "id")) { try GuestFrame.decodeValue(body: wrongType) }
    }
}
