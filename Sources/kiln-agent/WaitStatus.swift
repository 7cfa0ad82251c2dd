#if canImport(Glibc)
import Glibc
#endif

/// A child's status as `wait4` reports it.
struct WaitStatus {
    let raw: Int32

    /// The signal that ended the child, or 0 when it exited.
    var signal: Int32 { raw & 0x7f }

    /// The exit code, or 128 + the signal number when a signal ended it, as shells report it.
    var exitCode: Int32 { signal == 0 ? (raw >> 8) & 0xff : 128 + signal }

    /// Whether a signal of the kind a program raises on itself when it breaks — a bad memory
    /// access, an abort, an illegal instruction — ended it: a crash. SIGKILL is not one (the
    /// kernel's OOM killer, or the agent itself, sends it).
    var isCrash: Bool { [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGTRAP].contains(signal) }
}
