import Foundation
import KilnWire
import Testing

/// Writes messages encoded by KilnWire where the Python interop tests (Tests/interop) validate
/// them against schemas/ with independent libraries. `make test` sets KILN_INTEROP_OUT.
@Suite("Interop output")
struct InteropOutputTests {
    static func samples() throws -> [(name: String, body: [UInt8])] {
        let encoder = MessagePackEncoder()
        let invocation = Invocation(
            id: "swift-inv-1", method: "wordcount",
            args: ["text": "a b a", "n": -3, "ratio": 0.5, "raw": .binary([1, 2]), "list": [1, "two", nil], "big": .uint(.max)],
            context: ExecutionContext(locals: ["count": 2, "seen": ["a"]], state: [0xff, 0x00]),
            deadlineMs: 2_500, resources: ResourceRequest(vcpus: 1, memoryMB: 128), affinity: Affinity(key: "k"),
            trace: TraceContext(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            submittedAtUs: 1_795_939_200_000_000
        )
        let placement = InvocationResult.Placement(id: "vm-1", backend: "qemu", profile: "small", cold: false, reuseCount: 4)
        let timing = InvocationResult.Timing(queue: 100, schedule: 5, provision: 0, exec: 420, total: 500)
        let failure = InvocationResult.Failure(kind: "exit", message: "exited 3", exitCode: 3, stderr: "boom")
        let results: [InvocationResult] = InvocationResult.Status.allCases.map { status in
            InvocationResult(
                id: "swift-res-\(status.rawValue)", method: "m", status: status,
                output: status == .ok ? ["answer": 42] : nil,
                context: status == .ok ? ExecutionContext(locals: ["x": 1]) : nil,
                error: status == .ok ? nil : failure, attempt: 1,
                vm: status == .rejected ? nil : placement, timing: timing, predictedUs: 480,
                worker: "w-1", finishedAtUs: 1_795_939_200_000_500)
        }
        let payloads: [TelemetryEvent.Payload] = [
            .vmCreated(.init(vm: "vm-1", backend: "qemu", profile: "small", bootUs: 44_000, mode: "restore", reason: "replenish to idle target 2")),
            .vmDestroyed(.init(vm: "vm-1", reason: "max_uses", lifetimeUs: 9_000_000, uses: 100)),
            .vmReallocated(.init(vm: "vm-1", from: .init(vcpus: 1, cpuQuotaPercent: 50), to: .init(vcpus: 1, cpuQuotaPercent: 100), reason: "slow")),
            .poolResized(.init(profile: "small", from: 1, to: 3, reason: "demand")),
            .invocationCompleted(.init(id: "i", method: "m", status: .timeout, vm: "vm-1", cold: true, execUs: 1, totalUs: 2, predictedUs: nil,
                                       placement: .init(model: "rls", candidates: [
                                           .init(place: "new", warmth: "cold", predictedUs: 40_000, uncertaintyUs: 900, suitability: 24.5, chosen: true),
                                       ]))),
            .hostSample(.init(cpuUtil: 0.25, memAvailableMB: 2_048, memPressure: 0, netRxBps: 10, netTxBps: 20, vmsIdle: 2, vmsBusy: 0)),
        ]
        let frames: [GuestFrame] = [
            .hello(.init(agentVersion: "0.1.0", uptimeUs: 1_000, vcpus: 1, memoryMB: 128)),
            .exec(.init(id: "i", method: "echo", entry: ["/methods/echo/run"], payload: [0x80], deadlineMs: 100, resetAfter: true)),
            .result(.init(id: "i", status: .ok, output: [0x80], exitCode: 0, stderr: "", execUs: 90, maxrssKB: 900, resetPending: true)),
            .result(.init(id: "j", status: .error, output: [], exitCode: 139, stderr: "", execUs: 90, maxrssKB: 900, resetPending: true, crashed: true,
                          methodError: "boom")),
            .execBatch(.init(calls: [.init(id: "k", method: "echo", entry: ["/methods/echo/run"], payload: [0x80], deadlineMs: 100, resetAfter: true)])),
            .ping, .pong(.init(uptimeUs: 5, load1: 0.5, memAvailableKB: 1_000)), .reset(.init(keepRuntime: true)), .resetOK, .shutdown,
            .error(.init(message: "malformed frame")),
        ]
        var samples = [(name: "invocation-swift", body: try encoder.encode(invocation))]
        for result in results {
            samples.append(("result-swift-\(result.status.rawValue)", try encoder.encode(result)))
        }
        for payload in payloads {
            let event = TelemetryEvent(host: "host-a", worker: "w-1", atUs: 1, payload: payload)
            samples.append(("telemetry-swift-\(payload.kind)", try encoder.encode(event)))
        }
        for frame in frames {
            var name = "guest-swift-\(frame.type)"
            if case .result(let result) = frame { name += "-\(result.status.rawValue)" }
            samples.append((name, try encoder.encode(frame)))
        }
        return samples
    }

    @Test func writeEncodedMessagesForThePythonPeers() throws {
        let directory = ProcessInfo.processInfo.environment["KILN_INTEROP_OUT"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("kiln-interop-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for sample in try Self.samples() {
            #expect(!sample.body.isEmpty)
            _ = try MessagePackDecoder().decodeValue(from: sample.body)
            try Data(sample.body).write(to: directory.appendingPathComponent("\(sample.name).msgpack"))
        }
    }
}
