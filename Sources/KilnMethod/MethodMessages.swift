import KilnWire

/// A serve-mode call with typed `args`: the typed twin of ``ServeCall``, decoded in one pass.
/// `args` that do not decode as the method's input fail this call only, so the answer can still
/// carry the call's id.
struct TypedCall<Input: Decodable>: Decodable {
    var id: String
    var args: Result<Input, any Error>
    var context: ExecutionContext?
    var deadlineMs: UInt64

    enum CodingKeys: String, CodingKey {
        case id, args, context
        case deadlineMs = "deadline_ms"
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        deadlineMs = try container.decode(UInt64.self, forKey: .deadlineMs)
        context = try container.decodeIfPresent(ExecutionContext.self, forKey: .context)
        args = Result { try container.decode(Input.self, forKey: .args) }
    }
}

/// An exec-mode request with typed `args`: what the agent writes on the program's stdin.
struct TypedRequest<Input: Decodable>: Decodable {
    var args: Input
    var context: ExecutionContext?
}

/// The answer to a call: the typed twin of ``ServeAnswer`` (serve mode, with `id`), or the
/// `{output, context?}` map of exec mode (without).
struct TypedAnswer<Output: Encodable>: Encodable {
    var id: String?
    var output: Output?
    var context: ExecutionContext?
    var error: String?

    enum CodingKeys: String, CodingKey {
        case id, output, context, error
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        if let id { try container.encode(id, forKey: .id) }
        if let output { try container.encode(output, forKey: .output) } else { try container.encodeNil(forKey: .output) }
        if let context { try container.encode(context, forKey: .context) }
        if let error { try container.encode(error, forKey: .error) }
    }
}
