import Glibc
import KilnWire

/// The agent's end of the guest channel: one descriptor, read and written with blocking calls
/// (the agent serves one request at a time). A virtio port is reopened after the host goes away
/// (EOF): the snapshot template builder disconnects before it saves the VM, so every restored
/// clone resumes waiting for a host, and greets its own.
struct GuestPort {
    private let source: ChannelSource
    private var fd: Int32 = -1
    private var frames = FrameBuffer()
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    init(source: ChannelSource) {
        self.source = source
    }

    /// Whether a lost connection is followed by a new one (true for virtio ports).
    var reconnects: Bool {
        if case .virtioPort = source { return true }
        return false
    }

    /// Opens the channel; for a virtio port, waits until the port exists and opens (ENXIO until
    /// the device is ready).
    mutating func open() {
        frames = FrameBuffer()
        switch source {
        case .stdio: fd = 0
        case .descriptor(let inherited): fd = inherited
        case .virtioPort(let name):
            var attempts = 0
            while true {
                if let path = Self.portPath(named: name) {
                    let opened = Glibc.open(path, O_RDWR | O_CLOEXEC)
                    if opened >= 0 {
                        fd = opened
                        waitForHost()
                        return
                    }
                    let code = errno
                    if code != ENXIO && code != ENOENT && attempts % 1000 == 0 {
                        AgentLog.write("kiln-agent: open \(path): \(describeErrno(code)); retrying")
                    }
                } else if attempts % 1000 == 999 {
                    AgentLog.write("kiln-agent: no virtio port named \(name) yet; retrying")
                }
                attempts += 1
                var pause = timespec(tv_sec: 0, tv_nsec: 2_000_000)
                nanosleep(&pause, nil)
            }
        }
    }

    /// Marks the console when the agent starts waiting for a host: the snapshot template builder
    /// waits for this line before it saves the VM, so that a restored clone resumes here.
    static let waitingMarker = "kiln-agent: waiting for a host"

    /// Returns once a host is connected to the port. While none is, the port reports POLLHUP
    /// (reads return EOF at once, writes block), so the agent looks again every millisecond.
    /// After a snapshot restore this is where the clone resumes: the hello it then sends is
    /// composed after the restore.
    private func waitForHost() {
        var announced = false
        while true {
            var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            if poll(&entry, 1, 0) > 0, entry.revents & Int16(POLLOUT) != 0, entry.revents & Int16(POLLHUP) == 0 {
                return
            }
            if !announced {
                AgentLog.write(Self.waitingMarker)
                announced = true
            }
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
    }

    /// Closes the channel (the host is gone).
    mutating func close() {
        if case .virtioPort = source, fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    /// The next frame's body; nil at EOF or on a read error (the channel must be reopened).
    /// - Throws: a ``WireError`` when a length prefix is over the limit: the stream is out of step.
    mutating func nextFrame() throws(WireError) -> [UInt8]? {
        while true {
            if let body = try frames.nextFrame() {
                // A large frame leaves its capacity behind; a guest has little memory to spare.
                if body.count > 1 << 20 && frames.bufferedCount == 0 { frames = FrameBuffer() }
                return body
            }
            let count = readBuffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                readBuffer.withUnsafeBytes { frames.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            } else if count == 0 {
                return nil
            } else if errno != EINTR && errno != EAGAIN {
                AgentLog.write("kiln-agent: read: \(describeErrno(errno))")
                return nil
            }
        }
    }

    mutating func sendRaw(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress!, $0.count) } == bytes.count
    }

    /// Writes one frame. Returns false when the host is gone.
    mutating func send(_ frame: GuestFrame) -> Bool {
        let bytes: [UInt8]
        do {
            bytes = try frame.valueFramed()
        } catch {
            AgentLog.write("kiln-agent: cannot encode a \(frame.type) frame: \(error)")
            return true
        }
        let outputFD = if case .stdio = source { Int32(1) } else { fd }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(outputFD, $0.baseAddress! + offset, $0.count - offset) }
            if written > 0 {
                offset += written
            } else if written < 0 && (errno == EINTR || errno == EAGAIN) {
                continue
            } else {
                AgentLog.write("kiln-agent: write: \(describeErrno(errno))")
                return false
            }
        }
        return true
    }

    /// `/dev/vportNpM` of the port called `name`, from /sys/class/virtio-ports/*/name.
    private static func portPath(named name: String) -> String? {
        guard let directory = opendir("/sys/class/virtio-ports") else { return nil }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let port = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard port.hasPrefix("vport") else { continue }
            if let text = readSmallFile("/sys/class/virtio-ports/\(port)/name"),
               text.split(separator: "\n").first.map(String.init) == name {
                return "/dev/\(port)"
            }
        }
        return nil
    }
}

/// Reads a file whole, up to `limit` bytes; nil when it cannot be opened or read.
func readWholeFile(_ path: String, limit: Int) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 * 1024)
    while bytes.count < limit {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count > 0 {
            bytes.append(contentsOf: chunk[0..<count])
        } else if count < 0 && errno == EINTR {
            continue
        } else {
            return count == 0 ? bytes : nil
        }
    }
    return bytes
}

/// Reads a small text file (procfs, sysfs) whole; nil when it cannot be read.
func readSmallFile(_ path: String, limit: Int = 64 * 1024) -> String? {
    readWholeFile(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
}

/// Writes `text` to a control file (procfs, sysfs, cgroupfs) in one write; false when it cannot.
func writeSmallFile(_ path: String, _ text: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var bytes = Array(text.utf8)
    return bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count
}
