import KilnWire
import Testing

@testable import KilnMethod

/// A method for the tests: counts words, keeps a call counter in the context's locals, and fails
/// on request.
struct Counter: KilnMethod {
    struct Input: Decodable {
        var text: String
        var fail: Bool?
    }

    struct Output: Encodable {
        var words: Int
    }

    struct Refused: Error, CustomStringConvertible {
        var description: String { "refused on purpose" }
    }

    func handle(_ input: Input, context: inout MethodContext) async throws -> Output {
        if input.fail == true { throw Refused() }
        let calls = context.locals["calls"]?.uint64Value ?? 0
        context.locals["calls"] = .uint(calls + 1)
        return Output(words: input.text.split(whereSeparator: { $0 == " " }).count)
    }
}

@Suite("KilnMethod call server")
struct CallServerTests {
    let server = CallServer(method: Counter())

    @Test func answersACallWithItsIdOutputAndContext() async throws {
        let call = ServeCall(id: "c-1", args: ["text": "one two three"], context: ["locals": ["calls": 4]], deadlineMs: 500)
        let answer = try ServeAnswer(body: await server.answer(try call.body()))
        #expect(answer.id == "c-1")
        #expect(answer.error == nil)
        #expect(answer.output == ["words": 3])
        #expect(answer.context?["locals"]?["calls"] == 5)
    }

    @Test func aCallWithoutContextGetsTheOneTheHandlerMade() async throws {
        let answer = try ServeAnswer(body: await server.answer(try ServeCall(id: "c", args: ["text": "a"], deadlineMs: 1).body()))
        #expect(answer.context?["locals"]?["calls"] == 1)
    }

    @Test func aThrowingHandlerFailsTheCallOnly() async throws {
        let answer = try ServeAnswer(body: await server.answer(try ServeCall(id: "c-2", args: ["text": "x", "fail": true], deadlineMs: 1).body()))
        #expect(answer.id == "c-2")
        #expect(answer.error == "refused on purpose")
        #expect(answer.output == .nil)
    }

    @Test func argsOfTheWrongShapeFailTheCallWithItsId() async throws {
        let answer = try ServeAnswer(body: await server.answer(try ServeCall(id: "c-3", args: ["txt": 5], deadlineMs: 1).body()))
        #expect(answer.id == "c-3")
        #expect(answer.error?.contains("args do not decode as Input") == true, "\(answer.error ?? "")")
    }

    @Test func aBodyThatIsNoCallIsAProtocolError() async throws {
        let notACall = try MessagePackEncoder().encode(["args": 1] as MessagePackValue)
        await #expect(throws: WireError.self) { _ = try await server.answer(notACall) }
    }

    @Test func execModeAnswersWithOutputAndContext() async throws {
        let request = try MessagePackEncoder().encode(["args": ["text": "a b"], "context": ["locals": ["calls": 1]]] as MessagePackValue)
        let answer = try MessagePackDecoder().decodeValue(from: try await server.answerRequest(request))
        #expect(answer == ["output": ["words": 2], "context": ["locals": ["calls": 2]]])
    }

    @Test func execModeRethrowsTheHandlersError() async throws {
        let request = try MessagePackEncoder().encode(["args": ["text": "a", "fail": true]] as MessagePackValue)
        await #expect(throws: Counter.Refused.self) { _ = try await server.answerRequest(request) }
    }
}
