import Glibc
import KilnDigest
import KilnWire

// kiln-examples: the example method programs, one static binary. The method is the first
// argument (`kiln-examples echo`) or, through a symbolic link, the program's own name.
// Each reads the MessagePack map {args, context} on stdin and writes {output, context?} on stdout.

let name = CommandLine.arguments.count > 1
    ? CommandLine.arguments[1]
    : String(CommandLine.arguments[0].split(separator: "/").last ?? "")

guard let method = ExampleMethod(rawValue: name) else {
    MethodIO.fail("kiln-examples: unknown method '\(name)'; one of: \(ExampleMethod.allCases.map(\.rawValue).joined(separator: ", "))", exitCode: 64)
}
let input = MethodIO.readInput()
let answer = method.run(args: input["args"] ?? .nil)
MethodIO.writeAnswer(output: answer, context: input["context"])
