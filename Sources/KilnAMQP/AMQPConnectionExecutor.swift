/// Runs tasks on a connection's own thread, between its socket work, like a NIO event loop.
///
/// A task that publishes one message at a time, or consumes with a small prefetch, spends most
/// of its time handing work to the connection's thread and being woken when the confirm or the
/// delivery comes back: one thread wake per message. With this executor as its preference the
/// task runs on that thread, so the confirm resumes it in place:
///
/// ```swift
/// try await withTaskExecutorPreference(connection.executor) {
///     for message in messages { try await connection.publish(message) }
/// }
/// ```
///
/// What runs here delays the connection's own I/O, heartbeats included: give it short,
/// non-blocking work (publishing, acking, decoding), never a blocking call or a long
/// computation. Jobs that arrive before ``AMQPConnection/connect()`` wait for it; once the
/// connection is closed, they run on the global concurrent executor.
public final class AMQPConnectionExecutor: TaskExecutor {
    private let mailbox: Mailbox<ConnectionCommand>

    init(mailbox: Mailbox<ConnectionCommand>) {
        self.mailbox = mailbox
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if !mailbox.post(.run(job)) { Self.runElsewhere(job) }
    }

    /// Hands `job` to the global concurrent executor: the connection's thread has ended.
    static func runElsewhere(_ job: UnownedJob) {
        globalConcurrentExecutor.enqueue(ExecutorJob(job))
    }
}
