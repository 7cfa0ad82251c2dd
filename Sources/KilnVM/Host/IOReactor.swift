import CKilnHost
import Glibc
import Synchronization

/// The one thread that waits on descriptors for everything in KilnVM: guest channels, QMP
/// sockets and pidfds. Callers `await` readiness with a deadline; the thread sleeps in
/// `epoll_wait` until a descriptor is ready or the nearest deadline passes, then resumes the
/// waiting task. Nothing else blocks: the cooperative thread pool stays free for the hot path.
public final class IOReactor: Sendable {
    /// The process-wide reactor.
    public static let shared = IOReactor()

    /// What to wait for.
    public enum Readiness: Sendable {
        case readable
        case writable

        var events: UInt32 {
            switch self {
            case .readable: return UInt32(EPOLLIN.rawValue) | UInt32(EPOLLRDHUP.rawValue)
            case .writable: return UInt32(EPOLLOUT.rawValue)
            }
        }
    }

    /// Why a wait ended without readiness.
    public enum WaitError: Error, Sendable {
        case timedOut
        case cancelled
        case failed(errno: Int32)
    }

    private struct Waiter {
        let fd: Int32
        let continuation: CheckedContinuation<Void, any Error>
        let deadline: ContinuousClock.Instant?
    }

    private struct State {
        var nextToken: UInt64 = 1
        var waiters: [UInt64: Waiter] = [:]
        var cancelledBeforeRegistration: Set<UInt64> = []
    }

    private let epollFD: Int32
    private let wakeFD: Int32
    private let state = Mutex(State())

    private init() {
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        precondition(epollFD >= 0 && wakeFD >= 0, "IOReactor: epoll_create1/eventfd failed: \(errno)")
        var event = epoll_event(events: UInt32(EPOLLIN.rawValue), data: epoll_data_t(u64: 0))
        epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
        let reactor = Unmanaged.passUnretained(self)
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { context in
            Unmanaged<IOReactor>.fromOpaque(context!).takeUnretainedValue().loop()
        }, reactor.toOpaque())
        precondition(created == 0, "IOReactor: pthread_create failed: \(created)")
        pthread_detach(thread)
    }

    /// Suspends until `fd` is ready for `readiness`, or throws ``WaitError/timedOut`` at
    /// `deadline`, or ``WaitError/cancelled`` when the task is cancelled. One waiter per
    /// descriptor at a time.
    public func wait(
        for fd: Int32, _ readiness: Readiness, until deadline: ContinuousClock.Instant?
    ) async throws(WaitError) {
        let token = state.withLock { state in
            defer { state.nextToken += 1 }
            return state.nextToken
        }
        do {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    register(token: token, fd: fd, readiness: readiness, deadline: deadline, continuation: continuation)
                }
            } onCancel: {
                self.finish(token: token, with: WaitError.cancelled, orRemember: true)
            }
        } catch let error as WaitError {
            throw error
        } catch {
            throw .cancelled
        }
    }

    private func register(
        token: UInt64, fd: Int32, readiness: Readiness, deadline: ContinuousClock.Instant?,
        continuation: CheckedContinuation<Void, any Error>
    ) {
        let failure: (any Error)? = state.withLock { state in
            if state.cancelledBeforeRegistration.remove(token) != nil { return WaitError.cancelled }
            var event = epoll_event(
                events: readiness.events | UInt32(EPOLLONESHOT.rawValue), data: epoll_data_t(u64: token))
            if epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) != 0 {
                return WaitError.failed(errno: errno)
            }
            state.waiters[token] = Waiter(fd: fd, continuation: continuation, deadline: deadline)
            return nil
        }
        if let failure {
            continuation.resume(throwing: failure)
        } else if deadline != nil {
            wake()
        }
    }

    /// Ends the wait `token` (if it is still registered) with `error`, or nil for readiness.
    private func finish(token: UInt64, with error: (any Error)?, orRemember: Bool = false) {
        let waiter: Waiter? = state.withLock { state in
            guard let waiter = state.waiters.removeValue(forKey: token) else {
                if orRemember { state.cancelledBeforeRegistration.insert(token) }
                return nil
            }
            epoll_ctl(epollFD, EPOLL_CTL_DEL, waiter.fd, nil)
            return waiter
        }
        guard let waiter else { return }
        if let error {
            waiter.continuation.resume(throwing: error)
        } else {
            waiter.continuation.resume()
        }
    }

    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    private func loop() -> Never {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        let clock = ContinuousClock()
        while true {
            let nearest = state.withLock { state in state.waiters.values.compactMap(\.deadline).min() }
            var timeoutMs: Int32 = -1
            if let nearest {
                let remaining = clock.now.duration(to: nearest)
                let (seconds, attoseconds) = remaining.components
                // Held to a day first: a far deadline must not overflow the multiplication.
                let milliseconds = min(seconds, 86_400) * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
                timeoutMs = Int32(clamping: max(0, milliseconds))
            }
            let count = epoll_wait(epollFD, &events, Int32(events.count), timeoutMs)
            if count > 0 {
                for index in 0..<Int(count) {
                    let token = events[index].data.u64
                    if token == 0 {
                        var drained: UInt64 = 0
                        _ = Glibc.read(wakeFD, &drained, 8)
                    } else {
                        finish(token: token, with: nil)
                    }
                }
            }
            let now = clock.now
            let expired = state.withLock { state in
                state.waiters.filter { $0.value.deadline.map { $0 <= now } ?? false }.map(\.key)
            }
            for token in expired { finish(token: token, with: WaitError.timedOut) }
        }
    }
}
