import Glibc

/// Unix stream sockets for guest channels and QMP, all close-on-exec (children get only what
/// ``SpawnSpec/descriptors`` hands them).
enum UnixSocket {
    /// A connected pair.
    static func pair() throws(VMError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw .hostFailure("socketpair: \(String(cString: strerror(errno)))")
        }
        return (fds[0], fds[1])
    }

    /// A socket listening at `path` (replaced if it exists).
    static func listen(path: String) throws(VMError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .hostFailure("socket: \(String(cString: strerror(errno)))") }
        unlink(path)
        let bound = withAddress(path) { address, length in bind(fd, address, length) }
        guard bound == 0, Glibc.listen(fd, 4) == 0 else {
            let code = errno
            close(fd)
            throw .hostFailure("cannot listen on \(path): \(String(cString: strerror(code)))")
        }
        return fd
    }

    /// A socket connected to `path` (a listener's backlog accepts it even before the listener
    /// calls accept).
    static func connect(path: String) throws(VMError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .hostFailure("socket: \(String(cString: strerror(errno)))") }
        let connected = withAddress(path) { address, length in Glibc.connect(fd, address, length) }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw .hostFailure("cannot connect to \(path): \(String(cString: strerror(code)))")
        }
        return fd
    }

    private static func withAddress<Result>(
        _ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Result
    ) -> Result {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        precondition(bytes.count < MemoryLayout.size(ofValue: address.sun_path), "socket path too long: \(path)")
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }
}
