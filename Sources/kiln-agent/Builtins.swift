import KilnWire

/// Methods the agent answers itself, named by an entry that starts with `kiln:`.
enum Builtins {
    /// Answers at once with `{output: nil}` and starts nothing: what a call costs the platform
    /// itself (channel, agent, host), to measure that overhead. Never a stand-in for a method in a
    /// comparison with other systems.
    static let noop = "kiln:noop"

    /// `{"output": nil}`.
    private static let nilOutput: [UInt8] = [0x81, 0xa6] + Array("output".utf8) + [0xc0]

    /// The result of a builtin, or nil when the request's entry names a program.
    static func answer(_ request: GuestFrame.ExecRequest, started: UInt64) -> GuestFrame.ExecResult? {
        guard let program = request.entry.first, program.hasPrefix("kiln:") else { return nil }
        guard program == noop else {
            return GuestFrame.ExecResult(id: request.id, status: .error, output: [], exitCode: 127,
                                         stderr: "exec: the agent has no builtin \(program) (it has \(noop))",
                                         execUs: monotonicMicroseconds() - started, maxrssKB: 0)
        }
        return GuestFrame.ExecResult(id: request.id, status: .ok, output: nilOutput, exitCode: 0, stderr: "",
                                     execUs: monotonicMicroseconds() - started, maxrssKB: 0)
    }
}
