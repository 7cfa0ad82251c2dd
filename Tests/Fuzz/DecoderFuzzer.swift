// libFuzzer target for KilnWire's decoders, built by Tests/Fuzz/run.sh together with the
// KilnWire sources (one module, so no `import KilnWire`). Any crash, hang or leak found here
// is a bug: the decoder must answer every input with a value or a WireError.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoders(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    let buffer = UnsafeRawBufferPointer(start: data, count: count)
    let decoder = MessagePackDecoder()
    _ = try? Invocation.decode(body: buffer, messageID: "fuzz")
    _ = try? decoder.decode(InvocationResult.self, from: buffer)
    _ = try? decoder.decode(TelemetryEvent.self, from: buffer)
    _ = try? decoder.decode(GuestFrame.self, from: buffer)
    if let value = try? decoder.decode(MessagePackValue.self, from: buffer) {
        // Whatever decodes must encode and decode back to the same value.
        guard let again = try? decoder.decodeValue(from: try MessagePackEncoder().encode(value)), again == value else {
            fatalError("value did not survive re-encoding: \(value)")
        }
    }
    // Serve mode: the agent reads a runtime's answers, and the SDK the agent's calls, as bytes.
    let bytes = Array(buffer)
    if let answer = try? ServeAnswerFields(body: bytes) {
        // What the fast path passes on must be one well-formed value within the limits (its
        // strings are the runtime's business, as an exec-mode program's stdout is: the host's
        // decoder refuses invalid UTF-8).
        let wellFormed = answer.methodOutput.withUnsafeBytes { output in
            (try? MessagePackValidator(limits: .default).validate(output)) != nil
        }
        guard wellFormed else {
            fatalError("the answer's output is not MessagePack: \(bytes)")
        }
    }
    _ = try? ServeCallFields(body: bytes)
    _ = try? ServeCall.body(payload: bytes, id: "fuzz", deadlineMs: 1, framed: true)
    var frames = FrameBuffer(maxFrameBytes: 1 << 16)
    frames.append(buffer)
    while let body = try? frames.nextFrame() {
        // The host's reading (Codable) and the agent's (without it) must agree.
        let host = try? GuestFrame.decode(body: body)
        let agent = try? GuestFrame.decodeValue(body: Array(body))
        if let host, let agent, host != agent {
            fatalError("the host and the agent read one frame differently: \(host) and \(agent)")
        }
    }
    return 0
}
