import Foundation

/// Where in a document a JSON syntax error is, for people: Foundation's parser says only "around
/// character 412"; an editor wants a line and a column.
enum JSONSyntaxError {
    /// `line L, column C` (both from 1) of the error `JSONSerialization` threw for `data`, or nil
    /// when the error names no offset.
    static func location(of error: any Error, in data: Data) -> String? {
        let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
        guard let marker = detail.range(of: "character ") else { return nil }
        let digits = detail[marker.upperBound...].prefix(while: \.isNumber)
        guard let offset = Int(digits), offset >= 0 else { return nil }
        let (line, column) = lineAndColumn(ofByte: min(offset, data.count), in: data)
        return "line \(line), column \(column)"
    }

    /// The 1-based line and column (in characters) of the byte at `offset`.
    static func lineAndColumn(ofByte offset: Int, in data: Data) -> (line: Int, column: Int) {
        let before = data.prefix(offset)
        let line = before.reduce(1) { $1 == 0x0a ? $0 + 1 : $0 }
        let lineStart = before.lastIndex(of: 0x0a).map { $0 + 1 } ?? before.startIndex
        let column = String(decoding: before[lineStart...], as: UTF8.self).count + 1
        return (line, column)
    }
}
