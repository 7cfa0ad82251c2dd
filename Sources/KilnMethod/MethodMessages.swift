import KilnWire

/// An exec-mode request with typed `args`: what the agent writes on the program's stdin.
struct TypedRequest<Input: Decodable>: Decodable {
    var args: Input
    var context: ExecutionContext?
}

/// The `{output, context?}` answer of exec mode (serve-mode answers are spliced from bytes, see
/// ``ServeAnswerBody``).
struct TypedAnswer<Output: Encodable>: Encodable {
    var output: Output
    var context: ExecutionContext?

    enum CodingKeys: String, CodingKey {
        case output, context
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(output, forKey: .output)
        if let context { try container.encode(context, forKey: .context) }
    }
}
