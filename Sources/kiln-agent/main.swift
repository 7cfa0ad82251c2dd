import Glibc
import KilnWire

// kiln-agent: the guest side of the guest channel (DESIGN.md). It runs as PID 1 inside a micro-VM
// (speaking over the virtio-serial port named "agent"), or as PID 1 of fresh namespaces for the
// `process` backend (speaking over an inherited socket), or by hand over stdin/stdout.
// It imports Glibc and KilnWire only: the binary is linked with the Swift stdlib statically.

let options: AgentOptions
do {
    options = try AgentOptions(arguments: Array(CommandLine.arguments.dropFirst()))
} catch {
    AgentLog.write("kiln-agent: \(error)\n\(AgentOptions.usage)")
    exit(2)
}

if let root = options.sandboxRoot {
    do {
        try SandboxSetup(root: root, hostname: options.hostname, memoryMB: options.reportedMemoryMB,
                         rootfsFolders: options.rootfsFolders).enter()
    } catch {
        AgentLog.write("kiln-agent: cannot enter the sandbox at \(root): \(error)")
        exit(3)
    }
}

var agent = Agent(options: options)
agent.run()
