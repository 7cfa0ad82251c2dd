import Glibc

/// Where the agent's channel comes from.
enum ChannelSource: Equatable {
    /// The virtio-serial port with this name (inside a VM), reopened after every disconnect.
    case virtioPort(name: String)
    /// An inherited, connected socket or pipe: the host is gone when it reaches EOF.
    case descriptor(Int32)
    /// Standard input and output.
    case stdio
}

/// The agent's command line.
struct AgentOptions {
    static let usage = """
        usage: kiln-agent [--port NAME | --fd N | --stdio] [--scratch DIR] [--sandbox ROOT] [--hostname NAME]
          --port NAME     serve on the virtio-serial port NAME (default: agent)
          --fd N          serve on the inherited connected descriptor N
          --stdio         serve on standard input and output
          --scratch DIR   the methods' working directory, wiped by reset (default: /tmp)
          --sandbox ROOT  process backend: private mounts, /proc, /dev, /tmp, then chroot to ROOT
          --hostname NAME set the (namespaced) host name
          --manifest PATH the image's manifest in MessagePack: serve-mode and warm methods
                          (default: /kiln/methods.msgpack; missing: every method runs in exec mode)
          --vcpus N, --memory-mb N
                          what hello reports (a sandbox's limits; default: what the kernel sees)
          --method-user UID:GID | agent
                          who method programs run as (default: 65534:65534, nobody; agent: as the agent)
          --method-cgroup DIR
                          put method programs in this cgroup (v2) before they start (a VM's init
                          makes one with memory and process limits; missing: none)
          --rootfs-table PATH
                          the image's root file systems (default: /kiln/rootfs.msgpack; missing: none)
          --rootfs NAME=DIR
                          process backend: the folder the host mounted root file system NAME on
                          (bound in before the chroot); may repeat
          --method-max-processes N
                          the processes the method user may have (default 256 in a VM, none in a
                          sandbox, whose cgroup's pids.max holds them; 0: no limit)
        """

    var channel: ChannelSource = .virtioPort(name: "agent")
    var scratch = "/tmp"
    var sandboxRoot: String?
    var hostname: String?
    var manifest = "/kiln/methods.msgpack"
    var reportedVCPUs: UInt32?
    var reportedMemoryMB: UInt32?
    /// `nil`: methods run as the agent.
    var methodUser: (uid: UInt32, gid: UInt32)? = (65534, 65534)
    var methodMaxProcesses: Int?
    var methodCgroup: String?
    var rootfsTable = "/kiln/rootfs.msgpack"
    /// Root file system name → the host folder it is mounted on (process backend).
    var rootfsFolders: [String: String] = [:]

    init(arguments: [String]) throws(AgentOptionError) {
        var remaining = arguments[...]
        func value(for flag: String) throws(AgentOptionError) -> String {
            guard let next = remaining.popFirst() else { throw .missingValue(flag) }
            return next
        }
        while let flag = remaining.popFirst() {
            switch flag {
            case "--port": channel = .virtioPort(name: try value(for: flag))
            case "--fd":
                let text = try value(for: flag)
                guard let fd = Int32(text), fd >= 0 else { throw .badValue(flag, text) }
                channel = .descriptor(fd)
            case "--stdio": channel = .stdio
            case "--scratch": scratch = try value(for: flag)
            case "--sandbox": sandboxRoot = try value(for: flag)
            case "--hostname": hostname = try value(for: flag)
            case "--manifest": manifest = try value(for: flag)
            case "--method-user":
                let text = try value(for: flag)
                if text == "agent" {
                    methodUser = nil
                } else {
                    let parts = text.split(separator: ":")
                    guard parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) else { throw .badValue(flag, text) }
                    methodUser = (uid, gid)
                }
            case "--method-cgroup": methodCgroup = try value(for: flag)
            case "--rootfs-table": rootfsTable = try value(for: flag)
            case "--rootfs":
                let text = try value(for: flag)
                guard let equals = text.firstIndex(of: "="), equals != text.startIndex, text[text.index(after: equals)...].hasPrefix("/") else {
                    throw .badValue(flag, text)
                }
                rootfsFolders[String(text[..<equals])] = String(text[text.index(after: equals)...])
            case "--method-max-processes":
                let text = try value(for: flag)
                guard let number = Int(text), number >= 0 else { throw .badValue(flag, text) }
                methodMaxProcesses = number
            case "--vcpus", "--memory-mb":
                let text = try value(for: flag)
                guard let number = UInt32(text), number > 0 else { throw .badValue(flag, text) }
                if flag == "--vcpus" { reportedVCPUs = number } else { reportedMemoryMB = number }
            case "-h", "--help":
                print(Self.usage)
                exit(0)
            default: throw .unknown(flag)
            }
        }
    }
}

/// A command-line mistake.
enum AgentOptionError: Error, CustomStringConvertible {
    case unknown(String)
    case missingValue(String)
    case badValue(String, String)

    var description: String {
        switch self {
        case .unknown(let flag): return "unknown option \(flag)"
        case .missingValue(let flag): return "\(flag) needs a value"
        case .badValue(let flag, let value): return "\(flag): '\(value)' is not valid"
        }
    }
}

/// The agent's diagnostics go to stderr: the VM's serial console, or the sandbox's log file.
enum AgentLog {
    static func write(_ line: String) {
        let text = line.hasSuffix("\n") ? line : line + "\n"
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// `strerror` for an errno value.
func describeErrno(_ code: Int32) -> String {
    String(cString: strerror(code))
}
