import Glibc
import KilnWire

/// The host's end of the guest channel: length-prefixed MessagePack frames (``FrameBuffer``)
/// over a connected, non-blocking socket, every read and write bounded by a deadline on the
/// ``IOReactor``. One operation at a time (``AgentSession`` serializes them).
public actor GuestChannel {
    /// Why a channel operation failed.
    public enum Failure: Error, Sendable, Equatable {
        /// The deadline passed first.
        case timedOut
        /// The other side closed the channel (the VM or the agent is gone), or ``close()`` was called.
        case closed
        /// The bytes could not be decoded or encoded.
        case malformed(WireError)
        /// A system call failed.
        case io(errno: Int32)
    }

    private var fd: Int32
    private var frames: FrameBuffer
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    private var inFlight = 0
    private var closeRequested = false
    private let encoder = MessagePackEncoder()
    private let decoder = MessagePackDecoder()

    /// Takes ownership of `fd`, a connected stream socket, and makes it non-blocking.
    public init(fd: Int32, maxFrameBytes: Int = WireLimits.default.maxBodyBytes) {
        self.fd = fd
        self.frames = FrameBuffer(maxFrameBytes: maxFrameBytes)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    /// Sends one frame.
    public func send(_ frame: GuestFrame, until deadline: ContinuousClock.Instant) async throws(Failure) {
        let bytes: [UInt8]
        do { bytes = try frame.framed(encoder: encoder) } catch { throw .malformed(error) }
        try await write(bytes, until: deadline)
    }

    /// Receives the next frame.
    public func receive(until deadline: ContinuousClock.Instant) async throws(Failure) -> GuestFrame {
        let body = try await nextBody(until: deadline)
        do { return try GuestFrame.decode(body: body, decoder: decoder) } catch { throw .malformed(error) }
    }

    /// Sends raw bytes as they are (tests use it to send malformed frames).
    public func sendRaw(_ bytes: [UInt8], until deadline: ContinuousClock.Instant) async throws(Failure) {
        try await write(bytes, until: deadline)
    }

    /// Shuts the socket down at once (waking any pending operation with ``Failure/closed``) and
    /// closes it as soon as no operation uses it.
    public func close() {
        guard !closeRequested else { return }
        closeRequested = true
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
        closeIfIdle()
    }

    private func write(_ bytes: [UInt8], until deadline: ContinuousClock.Instant) async throws(Failure) {
        try begin()
        defer { end() }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if written > 0 {
                offset += written
                continue
            }
            let code = errno
            if code == EINTR { continue }
            guard code == EAGAIN else { throw code == EPIPE || code == ECONNRESET ? .closed : .io(errno: code) }
            try await waitFor(.writable, until: deadline)
        }
    }

    private func nextBody(until deadline: ContinuousClock.Instant) async throws(Failure) -> [UInt8] {
        try begin()
        defer { end() }
        while true {
            do {
                if let body = try frames.nextFrame() {
                    // Do not keep a large frame's capacity for the life of the VM.
                    if body.count > 1 << 20 && frames.bufferedCount == 0 {
                        frames = FrameBuffer(maxFrameBytes: frames.maxFrameBytes)
                    }
                    return body
                }
            } catch {
                throw .malformed(error)
            }
            let count = readBuffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                readBuffer.withUnsafeBytes { frames.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
                continue
            }
            if count == 0 { throw .closed }
            let code = errno
            if code == EINTR { continue }
            guard code == EAGAIN else { throw code == ECONNRESET ? .closed : .io(errno: code) }
            try await waitFor(.readable, until: deadline)
        }
    }

    private func waitFor(_ readiness: IOReactor.Readiness, until deadline: ContinuousClock.Instant) async throws(Failure) {
        if closeRequested { throw .closed }
        do {
            try await IOReactor.shared.wait(for: fd, readiness, until: deadline)
        } catch {
            switch error {
            case .timedOut: throw .timedOut
            case .cancelled: throw .closed
            case .failed(let code): throw .io(errno: code)
            }
        }
        if closeRequested { throw .closed }
    }

    private func begin() throws(Failure) {
        guard !closeRequested, fd >= 0 else { throw .closed }
        inFlight += 1
    }

    private func end() {
        inFlight -= 1
        closeIfIdle()
    }

    private func closeIfIdle() {
        guard closeRequested, inFlight == 0, fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
    }
}
