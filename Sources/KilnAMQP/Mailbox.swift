import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Hands commands from any task to the connection's thread, and wakes that thread when it is
/// asleep in `poll`. The wake-up pipe is written only when the thread is asleep, so a busy
/// thread takes commands without a system call.
final class Mailbox<Command: Sendable>: Sendable {
    private struct State {
        var commands: [Command] = []
        var sleeping = false
        var started = false
        var closed = false
    }

    private let state = Mutex(State())
    /// The read end of the wake-up pipe, which the thread polls beside the socket.
    let wakeDescriptor: Int32
    private let signalDescriptor: Int32

    init() {
        var descriptors: [Int32] = [-1, -1]
        if pipe(&descriptors) != 0 {
            fatalError("pipe failed: errno \(errno); the process is out of file descriptors")
        }
        for descriptor in descriptors {
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        }
        wakeDescriptor = descriptors[0]
        signalDescriptor = descriptors[1]
    }

    deinit {
        Glibc.close(wakeDescriptor)
        Glibc.close(signalDescriptor)
    }

    /// Marks the thread as running: from now on ``post(_:onlyOnceStarted:)`` takes everything.
    func start() {
        state.withLock { $0.started = true }
    }

    /// Queues `command`; `false` when the mailbox is closed (the connection is gone), or, with
    /// `onlyOnceStarted`, when its thread has not started yet.
    @discardableResult
    func post(_ command: Command, onlyOnceStarted: Bool = false) -> Bool {
        let wake: Bool? = state.withLock { state in
            guard !state.closed, state.started || !onlyOnceStarted else { return nil }
            state.commands.append(command)
            let wasSleeping = state.sleeping
            state.sleeping = false
            return wasSleeping
        }
        guard let wake else { return false }
        if wake { signal() }
        return true
    }

    /// Everything queued so far, oldest first.
    func take() -> [Command] {
        state.withLock { state in
            let commands = state.commands
            state.commands.removeAll(keepingCapacity: true)
            return commands
        }
    }

    /// Puts `commands` back in front of those queued since, for the next ``take()``: the rest of
    /// a batch that one failing command interrupted. Returns them instead when the mailbox is
    /// closed, for the caller to answer.
    func putBack(_ commands: ArraySlice<Command>) -> ArraySlice<Command> {
        guard !commands.isEmpty else { return [] }
        return state.withLock { state in
            guard !state.closed else { return commands }
            state.commands.insert(contentsOf: commands, at: 0)
            return []
        }
    }

    /// Waits up to `limit` for a command without sleeping in the kernel, yielding the CPU between
    /// looks; `true` when one arrived. Cheaper than a wake-up through `poll` when an answer is
    /// due within microseconds (the ack for a delivery just handed out, the next publish of a
    /// task whose confirm just arrived).
    func spin(upTo limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        repeat {
            if state.withLock({ !$0.commands.isEmpty }) { return true }
            sched_yield()
        } while ContinuousClock.now < deadline
        return false
    }

    /// Marks the thread as about to sleep; `false` (and no sleep) when commands are waiting.
    func prepareToSleep() -> Bool {
        state.withLock { state in
            guard state.commands.isEmpty else { return false }
            state.sleeping = true
            return true
        }
    }

    /// Marks the thread awake again and drains the wake-up pipe.
    func awake() {
        state.withLock { $0.sleeping = false }
        var drain = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &drain, { read(wakeDescriptor, $0.baseAddress, $0.count) }) > 0 {}
    }

    /// Refuses further commands and returns those still queued.
    func close() -> [Command] {
        state.withLock { state in
            state.closed = true
            let commands = state.commands
            state.commands.removeAll()
            return commands
        }
    }

    private func signal() {
        var byte: UInt8 = 1
        _ = write(signalDescriptor, &byte, 1)
    }
}
