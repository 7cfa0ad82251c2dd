// What of an error or a producer's string may reach a metrics label or a log line.
import KilnWire

extension Error {
    /// A short name for the error's kind, for metrics labels.
    var caseName: String {
        guard let wire = self as? WireError else { return "other" }
        switch wire {
        case .truncated: return "truncated"
        case .invalidByte: return "invalid_byte"
        case .trailingBytes: return "trailing_bytes"
        case .limitExceeded: return "limit_exceeded"
        case .invalidUTF8: return "invalid_utf8"
        case .typeMismatch: return "type_mismatch"
        case .missingKey: return "missing_key"
        case .invalidValue: return "invalid_value"
        case .unsupportedVersion: return "unsupported_version"
        case .unpackerFailed, .packerFailed: return "codec"
        }
    }
}

extension String {
    /// The text for a log line: at most 300 characters, control characters escaped. What a
    /// producer sends (a routing key, a key in an error's path) reaches logs only this way.
    var loggable: String {
        var text = ""
        for scalar in unicodeScalars.prefix(300) {
            text += scalar.properties.generalCategory == .control ? scalar.escaped(asASCII: true) : String(scalar)
        }
        return unicodeScalars.count > 300 ? text + "…" : text
    }
}
