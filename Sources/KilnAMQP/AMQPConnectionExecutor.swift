/// Runs tasks on a connection's own thread, between its socket work, like a NIO event loop.
///
/// A task that publishes one message at a time, or consumes with a small prefetch, spends most
/// of its time handing work to the connection's thread and being woken when the confirm or the
/// delivery comes back: one thread wake per message. With this executor as its preference the
/// task runs on that thread: the confirm queues it in the thread's mailbox, and it runs on the
/// thread's next pass, with no thread to wake:
///
/// ```swift
/// try await withTaskExecutorPreference(connection.executor) {
///     for message in messages { try await connection.publish(message) }
/// }
/// ```
///
/// What runs here delays the connection's own I/O, heartbeats included: give it short,
/// non-blocking work (publishing, acking, decoding), never a blocking call or a long
/// computation. Conversely, its tasks wait while the thread (re)connects, which blocks for up to
/// the handshake timeout per attempt. Before ``AMQPConnection/connect()`` started the thread,
/// and once the connection is closed, its tasks run on the global concurrent executor.
public final class AMQPConnectionExecutor: TaskExecutor {
    private let mailbox: Mailbox<ConnectionCommand>

    init(mailbox: Mailbox<ConnectionCommand>) {
        self.mailbox = mailbox
    }

    /// Queues `job` for the connection's thread, or for the global concurrent executor when
    /// that thread is not running.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if !mailbox.post(.run(job), onlyOnceStarted: true) { Self.runElsewhere(job) }
    }

    /// Hands `job` to the global concurrent executor: the connection's thread is not running.
    static func runElsewhere(_ job: UnownedJob) {
        globalConcurrentExecutor.enqueue(ExecutorJob(job))
    }
}
