import Glibc
import KilnDigest
import KilnMethod
import KilnWire

// kiln-examples: the example method programs, one static binary. The method is the first
// argument (`kiln-examples echo`) or, through a symbolic link, the program's own name.
// The plain ones read the MessagePack map {args, context} on stdin and write {output, context?} on
// stdout (exec mode only); the SDK ones (echo-sdk, wordcount) speak serve mode too.

let name = CommandLine.arguments.count > 1
    ? CommandLine.arguments[1]
    : String(CommandLine.arguments[0].split(separator: "/").last ?? "")

if let method = SDKMethods.all[name] {
    MethodRuntime.start(method)
}
guard let method = ExampleMethod(rawValue: name) else {
    let names = ExampleMethod.allCases.map(\.rawValue) + SDKMethods.all.keys.sorted()
    MethodIO.fail("kiln-examples: unknown method '\(name)'; one of: \(names.joined(separator: ", "))", exitCode: 64)
}
let input = MethodIO.readInput()
let answer = method.run(args: input["args"] ?? .nil)
MethodIO.writeAnswer(output: answer, context: input["context"])
