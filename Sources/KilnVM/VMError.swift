/// What went wrong with a micro-VM, its image or its host, worded so that an operator knows what
/// to do next.
public enum VMError: Error, Sendable, Equatable {
    /// The guest image is missing or incomplete.
    case imageMissing(path: String, hint: String)
    /// Building the guest image failed at `step`.
    case imageBuildFailed(step: String, reason: String)
    /// A method manifest could not be read.
    case manifestInvalid(path: String, reason: String)
    /// A host command or system call failed.
    case hostFailure(String)
    /// A child process (QEMU, the agent, a build tool) could not be started.
    case spawnFailed(String)
    /// A step did not finish in time; the VM's process was killed.
    case timedOut(vm: String, step: String, after: Duration, detail: String)
    /// The VM's process ended (or its channel closed) while it was in use.
    case vmDied(vm: String, during: String, detail: String)
    /// The agent answered something this host does not expect.
    case protocolViolation(vm: String, detail: String)
    /// The agent reported an error frame.
    case agentError(vm: String, message: String)
    /// QEMU's monitor refused a command.
    case monitorError(vm: String, command: String, detail: String)
    /// The VM was destroyed already.
    case destroyed(vm: String)
    /// The driver cannot do this on this host or for this VM.
    case unsupported(String)
    /// The `process` backend needs privileges or kernel features this host does not give.
    case sandboxUnavailable(String)
}

extension VMError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .imageMissing(let path, let hint):
            return "guest image not found at \(path): \(hint)"
        case .imageBuildFailed(let step, let reason):
            return "guest image build failed while \(step): \(reason)"
        case .manifestInvalid(let path, let reason):
            return "method manifest \(path) is invalid: \(reason)"
        case .hostFailure(let reason):
            return "host failure: \(reason)"
        case .spawnFailed(let reason):
            return reason
        case .timedOut(let vm, let step, let after, let detail):
            return "VM \(vm): \(step) did not finish within \(after.text); the VM was killed\(detail.isEmpty ? "" : " (\(detail))")"
        case .vmDied(let vm, let during, let detail):
            return "VM \(vm) died during \(during)\(detail.isEmpty ? "" : ": \(detail)")"
        case .protocolViolation(let vm, let detail):
            return "VM \(vm): unexpected answer from the agent: \(detail)"
        case .agentError(let vm, let message):
            return "VM \(vm): the agent reported: \(message)"
        case .monitorError(let vm, let command, let detail):
            return "VM \(vm): QMP \(command) failed: \(detail)"
        case .destroyed(let vm):
            return "VM \(vm) is destroyed; provision a new one"
        case .unsupported(let reason):
            return "unsupported: \(reason)"
        case .sandboxUnavailable(let reason):
            return "process sandbox unavailable: \(reason)"
        }
    }
}
