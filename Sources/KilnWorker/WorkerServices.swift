import KilnAMQP
import KilnPool
import Logging
import ServiceLifecycle

/// Consumes invocations and runs each through the pipeline, as many at once as the prefetch
/// lets through. On graceful shutdown it stops consuming, lets every invocation in flight
/// finish (result published, delivery acked), then returns.
public struct InvocationConsumer: Service {
    let connection: AMQPConnection
    let queue: String
    let prefetch: UInt16
    let pipeline: InvocationPipeline
    let logger: Logger

    public init(connection: AMQPConnection, queue: String, prefetch: UInt16, pipeline: InvocationPipeline, logger: Logger) {
        self.connection = connection
        self.queue = queue
        self.prefetch = prefetch
        self.pipeline = pipeline
        self.logger = logger
    }

    public func run() async throws {
        let deliveries = try await connection.consume(queue: queue, prefetch: prefetch)
        logger.info("consuming \(queue) with prefetch \(prefetch)")
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for try await delivery in deliveries {
                    group.addTask { await pipeline.handle(delivery) }
                }
            }
        } onGracefulShutdown: {
            logger.info("draining: no new invocations; finishing those in flight")
            Task { await connection.cancelConsumer() }
        }
        logger.info("all invocations in flight have finished")
    }
}

/// Resizes the pools every interval (from demand and host headroom) and keeps them replenished.
public struct PoolMaintainer: Service {
    let pool: VMPool
    let interval: Duration

    public init(pool: VMPool, interval: Duration) {
        self.pool = pool
        self.interval = interval
    }

    public func run() async throws {
        await pool.replenish()
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return
                }
                await pool.resize()
            }
        }
    }
}
