import Glibc
import KilnMethod
import KilnWire
import Synchronization

/// `echo-sdk`: the echo method written with the `KilnMethod` SDK; returns its args. With
/// `{"crash": true}` the process dies mid-call, and with `{"hang": true}` it never answers (the
/// tests of serve mode use both).
struct SDKEcho: KilnMethod {
    func handle(_ input: MessagePackValue, context: inout MethodContext) async throws -> MessagePackValue {
        if input["crash"] == true {
            abort()
        }
        if input["hang"] == true {
            while true { sleep(60) }
        }
        return input
    }
}

/// `wordcount`: the words, lines and characters of `args.text`, and how many calls this runtime
/// has served (in serve mode the count grows; in exec mode it is always 1).
struct WordCount: KilnMethod {
    struct Input: Decodable {
        var text: String
    }

    struct Output: Encodable {
        var words: Int
        var lines: Int
        var characters: Int
        var runtimeCalls: Int

        enum CodingKeys: String, CodingKey {
            case words, lines, characters
            case runtimeCalls = "runtime_calls"
        }
    }

    /// Calls this process served.
    private let served = CallCounter()

    func handle(_ input: Input, context: inout MethodContext) async throws -> Output {
        var words = 0
        var lines = 0
        var inWord = false
        for scalar in input.text.unicodeScalars {
            if scalar == "\n" { lines += 1 }
            let space = scalar.properties.isWhitespace
            if !space && !inWord { words += 1 }
            inWord = !space
        }
        if !input.text.isEmpty && !input.text.hasSuffix("\n") { lines += 1 }
        return Output(words: words, lines: lines, characters: input.text.count, runtimeCalls: served.increment())
    }
}

/// A counter shared by the calls of one runtime.
final class CallCounter: Sendable {
    private let count = Atomic<Int>(0)

    /// Adds one and returns the new count.
    func increment() -> Int {
        count.wrappingAdd(1, ordering: .relaxed).newValue
    }
}

/// The SDK methods by the name `kiln-examples` is started with.
enum SDKMethods {
    static let all: [String: any KilnMethod] = ["echo-sdk": SDKEcho(), "wordcount": WordCount()]
}
