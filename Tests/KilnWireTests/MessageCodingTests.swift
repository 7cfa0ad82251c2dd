import KilnWire
import Testing

@Suite("v1 message types")
struct MessageCodingTests {
    let encoder = MessagePackEncoder()
    let decoder = MessagePackDecoder()

    func roundTrip<T: Codable & Equatable>(_ value: T) throws -> T {
        try decoder.decode(T.self, from: try encoder.encode(value))
    }

    static let fullInvocation = Invocation(
        id: "inv-1", method: "wordcount",
        args: ["text": "a b a", "top": 2, "blob": .binary([1, 2, 3])],
        context: ExecutionContext(locals: ["n": 1, "names": ["x", "y"]], state: [9, 8, 7]),
        deadlineMs: 5_000, resources: ResourceRequest(vcpus: 2, memoryMB: 256),
        affinity: Affinity(key: "user-1"), trace: TraceContext(traceparent: "00-abc-def-01"),
        submittedAtUs: 1_795_939_200_000_000
    )

    @Test func invocationRoundTrips() throws {
        #expect(try roundTrip(Self.fullInvocation) == Self.fullInvocation)
        let minimal = Invocation(id: "inv-2", method: "echo")
        #expect(try roundTrip(minimal) == minimal)
    }

    @Test func invocationUsesSnakeCaseKeysAndLeavesOutAbsentOptionals() throws {
        let body = try encoder.encode(Invocation(id: "i", method: "m", deadlineMs: 7))
        let map = try decoder.decodeValue(from: body)
        #expect(map["v"] == 1)
        #expect(map["deadline_ms"] == 7)
        #expect(map["context"] == nil)
        #expect(map["resources"] == nil)
    }

    @Test func invocationTakesItsIdFromTheMessageIDWhenTheBodyHasNone() throws {
        let body = try encoder.encode(MessagePackValue.map([(key: "v", value: 1), (key: "method", value: "echo")]))
        let invocation = try body.withUnsafeBytes { try Invocation.decode(body: $0, messageID: "amqp-42") }
        #expect(invocation.id == "amqp-42")
        #expect(invocation.args == .nil)
        #expect(throws: WireError.missingKey("id", path: "")) {
            try body.withUnsafeBytes { try Invocation.decode(body: $0, messageID: nil) }
        }
    }

    @Test func unknownKeysAreIgnoredAndNilMeansAbsent() throws {
        let body = try encoder.encode([
            "v": 1, "id": "i", "method": "m", "future_field": ["x": 1], "deadline_ms": nil, "affinity": nil,
        ] as MessagePackValue)
        let invocation = try decoder.decode(Invocation.self, from: body)
        #expect(invocation.deadlineMs == nil)
        #expect(invocation.affinity == nil)
    }

    @Test func otherVersionsAreRefused() throws {
        let body = try encoder.encode(["v": 2, "id": "i", "method": "m"] as MessagePackValue)
        #expect(throws: WireError.unsupportedVersion(2)) { try decoder.decode(Invocation.self, from: body) }
    }

    @Test func resultRoundTripsWithItsRoutingKey() throws {
        let result = InvocationResult(
            id: "inv-1", method: "fail", status: .error, output: nil,
            error: .init(kind: "exit", message: "exited 3", exitCode: 3, stderr: "boom"), attempt: 2,
            vm: .init(id: "vm-1", backend: "qemu", profile: "small", cold: true, reuseCount: 0),
            timing: .init(queue: 5, schedule: 1, provision: 40_000, exec: 900, total: 41_000),
            predictedUs: 40_500, worker: "w-1", finishedAtUs: 99
        )
        #expect(try roundTrip(result) == result)
        #expect(result.routingKey == "fail.error")
        let map = try decoder.decodeValue(from: try encoder.encode(result))
        #expect(map["timing_us"]?["provision"] == 40_000)
        #expect(map["error"]?["exit_code"] == 3)
        #expect(map["vm"]?["reuse_count"] == 0)
    }

    @Test(arguments: [
        TelemetryEvent.Payload.vmCreated(.init(vm: "vm-1", backend: "qemu", profile: "small", bootUs: 44_000, mode: "restore", reason: "replenish to idle target 2")),
        .vmDestroyed(.init(vm: "vm-1", reason: "max_uses", lifetimeUs: 1_000, uses: 100)),
        .vmReallocated(.init(vm: "vm-1", from: .init(cpuQuotaPercent: 50), to: .init(cpuQuotaPercent: 100), reason: "slow")),
        .poolResized(.init(profile: "small", from: 2, to: 4, reason: "demand")),
        .invocationCompleted(.init(id: "i", method: "m", status: .ok, vm: "vm-1", cold: false, execUs: 5, totalUs: 9, predictedUs: 6)),
        .hostSample(.init(cpuUtil: 0.5, memAvailableMB: 1_000, memPressure: 0.01, netRxBps: 1, netTxBps: 2, vmsIdle: 3, vmsBusy: 1)),
    ])
    func telemetryEventsAreFlatMaps(_ payload: TelemetryEvent.Payload) throws {
        let event = TelemetryEvent(host: "host-a", worker: "w", atUs: 123, payload: payload)
        #expect(try roundTrip(event) == event)
        let map = try decoder.decodeValue(from: try encoder.encode(event))
        #expect(map["kind"] == .string(payload.kind))
        #expect(map["at_us"] == 123)
        #expect(event.routingKey == "\(payload.kind).host-a")
    }

    @Test func unknownTelemetryKindsAreKept() throws {
        let body = try encoder.encode([
            "v": 1, "kind": "gpu.sample", "host": "h", "worker": "w", "at_us": 1, "gpu_util": 0.5,
        ] as MessagePackValue)
        let event = try decoder.decode(TelemetryEvent.self, from: body)
        guard case .unknown(let kind, let fields) = event.payload else {
            Issue.record("expected an unknown kind, got \(event.payload)")
            return
        }
        #expect(kind == "gpu.sample")
        #expect(fields["gpu_util"] == 0.5)
        let again = try decoder.decodeValue(from: try encoder.encode(event))
        #expect(again["gpu_util"] == 0.5)
        #expect(again["kind"] == "gpu.sample")
    }

    @Test(arguments: [
        GuestFrame.hello(.init(agentVersion: "0.1.0", uptimeUs: 1, vcpus: 1, memoryMB: 128)),
        .exec(.init(id: "i", method: "echo", entry: ["/methods/echo/run"], payload: [0x80], deadlineMs: 100)),
        .result(.init(id: "i", status: .timeout, output: [], exitCode: 137, stderr: "tail", execUs: 100_000, maxrssKB: 1_024)),
        .ping, .pong(.init(uptimeUs: 2, load1: 0.1, memAvailableKB: 9)), .reset(.init()), .reset(.init(keepRuntime: true)), .resetOK, .shutdown,
        .error(.init(message: "bad frame")),
    ])
    func guestFramesRoundTripThroughTheFrameCodec(_ frame: GuestFrame) throws {
        var buffer = FrameBuffer(maxFrameBytes: 1 << 20)
        let framed = try frame.framed()
        // Deliver the frame a byte at a time: nothing comes out until it is whole.
        for byte in framed.dropLast() {
            buffer.append([byte])
            #expect(try buffer.nextFrame() == nil)
        }
        buffer.append([framed.last!])
        let body = try #require(try buffer.nextFrame())
        #expect(try GuestFrame.decode(body: body) == frame)
        #expect(buffer.bufferedCount == 0)
    }

    @Test func frameBufferSplitsBackToBackFrames() throws {
        var buffer = FrameBuffer()
        var stream: [UInt8] = []
        for index in 0..<100 { stream += try GuestFrame.error(.init(message: "m\(index)")).framed() }
        buffer.append(stream)
        var count = 0
        while let body = try buffer.nextFrame() {
            #expect(try GuestFrame.decode(body: body) == .error(.init(message: "m\(count)")))
            count += 1
        }
        #expect(count == 100)
    }
}
