/// The `v` field every message carries. Decoding fails with ``WireError/unsupportedVersion(_:)``
/// for any version other than the one this code speaks.
public struct WireVersion: Codable, Sendable, Hashable {
    /// The version number.
    public let number: Int

    /// Version 1 of the wire contract, the only one so far.
    public static let v1 = WireVersion(number: 1)

    private init(number: Int) {
        self.number = number
    }

    public init(from decoder: any Decoder) throws {
        let number = try decoder.singleValueContainer().decode(Int.self)
        guard number == Self.v1.number else { throw WireError.unsupportedVersion(number) }
        self.number = number
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(number)
    }
}
