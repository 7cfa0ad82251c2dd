/// Bounds on untrusted MessagePack input, checked before anything is allocated for it.
///
/// Every decode in KilnWire checks its input against these limits first; input that breaks one
/// fails with ``WireError/limitExceeded(_:actual:maximum:offset:)``. The defaults suit invocation
/// bodies: change them in the worker's configuration, not per call.
public struct WireLimits: Sendable, Hashable {
    /// The largest body, in bytes.
    public var maxBodyBytes: Int
    /// The deepest nesting of arrays and maps; a scalar at top level is depth 0.
    public var maxDepth: Int
    /// The most elements one array may hold, or entries one map may hold.
    public var maxContainerLength: Int
    /// The most elements, entries and scalars in a whole body: bounds what decoding allocates.
    public var maxTotalElements: Int
    /// The longest string, in bytes.
    public var maxStringBytes: Int
    /// The longest binary or ext payload, in bytes.
    public var maxBinaryBytes: Int

    /// The deepest nesting msgpack-c's unpacker supports; `maxDepth` is clamped below it.
    public static let unpackerDepthCeiling = 31

    /// Creates limits; `maxDepth` is clamped to ``unpackerDepthCeiling``.
    public init(
        maxBodyBytes: Int = 16 << 20,
        maxDepth: Int = 24,
        maxContainerLength: Int = 1 << 20,
        maxTotalElements: Int = 1 << 20,
        maxStringBytes: Int = 4 << 20,
        maxBinaryBytes: Int = 16 << 20
    ) {
        self.maxBodyBytes = max(0, maxBodyBytes)
        self.maxDepth = min(max(0, maxDepth), Self.unpackerDepthCeiling)
        self.maxContainerLength = max(0, maxContainerLength)
        self.maxTotalElements = max(1, maxTotalElements)
        self.maxStringBytes = max(0, maxStringBytes)
        self.maxBinaryBytes = max(0, maxBinaryBytes)
    }

    /// The defaults: 16 MiB bodies, depth 24, 1 Mi elements, 4 MiB strings, 16 MiB binaries.
    public static let `default` = WireLimits()
}

/// The limit a piece of input broke.
public enum WireLimit: String, Sendable, Hashable, CustomStringConvertible {
    case bodyBytes = "body size"
    case depth = "nesting depth"
    case containerLength = "container length"
    case totalElements = "total elements"
    case stringBytes = "string length"
    case binaryBytes = "binary length"
    case frameBytes = "frame size"

    public var description: String { rawValue }
}
