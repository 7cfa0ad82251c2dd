/// A position in a document being encoded or decoded, kept as a chain of parents so that a
/// nested value costs one small node, and the full path is built only for an error or on request.
indirect enum CodingPathNode: Sendable {
    case root
    case key(String, parent: CodingPathNode)
    case index(Int, parent: CodingPathNode)

    func appending(_ key: some CodingKey) -> CodingPathNode {
        if let index = key.intValue, key.stringValue == "\(index)" { return .index(index, parent: self) }
        return .key(key.stringValue, parent: self)
    }

    /// The path as `CodingKey`s, outermost first.
    var codingPath: [any CodingKey] {
        var keys: [any CodingKey] = []
        var node = self
        while true {
            switch node {
            case .root: return keys.reversed()
            case .key(let name, let parent):
                keys.append(IndexOrNameKey(stringValue: name))
                node = parent
            case .index(let index, let parent):
                keys.append(IndexOrNameKey(intValue: index))
                node = parent
            }
        }
    }

    /// The path as errors print it: `context.locals.x[2]`.
    var dotted: String { codingPath.dottedPath }
}

/// A coding key for array elements and for map keys that are not known in advance.
struct IndexOrNameKey: CodingKey {
    let stringValue: String
    let intValue: Int?

    init(stringValue: String) {
        self.stringValue = stringValue
        self.intValue = nil
    }

    init(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }

    static let superKey = IndexOrNameKey(stringValue: "super")
}

extension Array where Element == any CodingKey {
    /// The path as errors print it: `context.locals.x[2]`.
    var dottedPath: String {
        var path = ""
        for key in self {
            if let index = key.intValue, key.stringValue == "\(index)" {
                path += "[\(index)]"
            } else {
                path += path.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return path
    }
}

/// Type identities the coders special-case, looked up once rather than on every value.
enum SpecialTypes {
    static let value = ObjectIdentifier(MessagePackValue.self)
    static let bytes = ObjectIdentifier([UInt8].self)
}
