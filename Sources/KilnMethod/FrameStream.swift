import Glibc
import KilnWire

/// Length-prefixed frames over a pair of blocking descriptors: the runtime's side of serve mode.
struct FrameStream {
    private let input: Int32
    private let output: Int32
    private var frames = FrameBuffer()
    private var chunk = [UInt8](repeating: 0, count: 64 * 1024)

    init(input: Int32, output: Int32) {
        self.input = input
        self.output = output
    }

    /// The next frame's body; nil at EOF (the agent closed the runtime's stdin).
    /// - Throws: ``FrameStreamError`` on a read error or an oversized length prefix.
    mutating func next() throws(FrameStreamError) -> [UInt8]? {
        while true {
            do {
                if let body = try frames.nextFrame() { return body }
            } catch {
                throw .malformed("\(error)")
            }
            let count = chunk.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if count > 0 {
                chunk.withUnsafeBytes { frames.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            } else if count == 0 {
                if frames.bufferedCount > 0 { throw .malformed("EOF inside a frame") }
                return nil
            } else if errno != EINTR {
                throw .io("read: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Writes one frame.
    func send(_ body: [UInt8]) throws(FrameStreamError) {
        try writeAll(output, FrameBuffer.frame(body))
    }
}

/// Writes all of `bytes` to `fd`.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(FrameStreamError) {
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if written > 0 {
            offset += written
        } else if written < 0 && errno == EINTR {
            continue
        } else {
            throw .io("write: \(String(cString: strerror(errno)))")
        }
    }
}

/// Why the frame stream stopped.
enum FrameStreamError: Error, CustomStringConvertible {
    case io(String)
    case malformed(String)

    var description: String {
        switch self {
        case .io(let detail): return detail
        case .malformed(let detail): return "malformed frame from the agent: \(detail)"
        }
    }
}
