/// The length-prefixed framing of the guest channel: a 4-byte big-endian body length, then the
/// body. `FrameBuffer` collects bytes as they arrive and hands out whole frames.
///
/// ```swift
/// var frames = FrameBuffer(maxFrameBytes: 16 << 20)
/// frames.append(bytesFromSocket)
/// while let body = try frames.nextFrame() { … }
/// ```
///
/// A length prefix over `maxFrameBytes` is an error as soon as its four bytes arrive: nothing is
/// allocated for it.
public struct FrameBuffer: Sendable {
    /// The size of the length prefix.
    public static let prefixBytes = 4

    /// The largest body accepted.
    public let maxFrameBytes: Int
    private var bytes: [UInt8] = []
    private var readIndex = 0

    /// Creates an empty buffer accepting bodies of up to `maxFrameBytes`.
    public init(maxFrameBytes: Int = WireLimits.default.maxBodyBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    /// Bytes received but not yet handed out as frames.
    public var bufferedCount: Int { bytes.count - readIndex }

    /// Adds received bytes.
    public mutating func append(_ received: UnsafeRawBufferPointer) {
        compactIfWorthIt()
        bytes.append(contentsOf: received)
    }

    /// Adds received bytes.
    public mutating func append(_ received: [UInt8]) {
        received.withUnsafeBytes { append($0) }
    }

    /// The next whole frame's body, or `nil` until more bytes arrive.
    /// - Throws: ``WireError/limitExceeded(_:actual:maximum:offset:)`` for an oversized prefix;
    ///   the buffer is unusable after that (the stream is out of step).
    public mutating func nextFrame() throws(WireError) -> [UInt8]? {
        guard bufferedCount >= Self.prefixBytes else { return nil }
        var length = 0
        for index in readIndex..<readIndex + Self.prefixBytes { length = length << 8 | Int(bytes[index]) }
        guard length <= maxFrameBytes else {
            throw .limitExceeded(.frameBytes, actual: length, maximum: maxFrameBytes, offset: readIndex)
        }
        guard bufferedCount - Self.prefixBytes >= length else { return nil }
        let start = readIndex + Self.prefixBytes
        readIndex = start + length
        return Array(bytes[start..<readIndex])
    }

    /// Frames `body`: its length prefix followed by the body.
    public static func frame(_ body: [UInt8]) -> [UInt8] {
        var framed: [UInt8] = []
        framed.reserveCapacity(prefixBytes + body.count)
        let length = UInt32(truncatingIfNeeded: body.count)
        framed.append(UInt8(length >> 24))
        framed.append(UInt8(length >> 16 & 0xff))
        framed.append(UInt8(length >> 8 & 0xff))
        framed.append(UInt8(length & 0xff))
        framed.append(contentsOf: body)
        return framed
    }

    private mutating func compactIfWorthIt() {
        if readIndex == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            readIndex = 0
        } else if readIndex > 4096, readIndex * 2 > bytes.count {
            bytes.removeFirst(readIndex)
            readIndex = 0
        }
    }
}

extension GuestFrame {
    /// This frame, encoded and length-prefixed, ready to write to the channel.
    public func framed(encoder: MessagePackEncoder = MessagePackEncoder()) throws(WireError) -> [UInt8] {
        FrameBuffer.frame(try encoder.encode(self))
    }

    /// Decodes a frame body taken from a ``FrameBuffer``.
    public static func decode(
        body: [UInt8], decoder: MessagePackDecoder = MessagePackDecoder()
    ) throws(WireError) -> GuestFrame {
        try decoder.decode(GuestFrame.self, from: body)
    }
}
