import Foundation

// What the connection's thread does with each command from a task, connected or not.
extension ConnectionLoop {
    func handleWhileDisconnected(_ command: ConnectionCommand) {
        // A close earlier in the same batch ended the loop.
        guard !finished else { return abandon(command, with: AMQPError.closed) }
        switch command {
        case .publish(let pending):
            if let refused = machine.enqueue(pending) { answer([refused]) }
        case .settle:
            break // The broker requeued everything unacked when the connection dropped.
        case .declare(let topology, let done):
            topologies.append(topology)
            pendingDeclares.append((topology, done))
        case .consume(let request):
            guard consumer == nil else {
                request.started.resume(throwing: AMQPError.protocolError("this connection already has a consumer"))
                return
            }
            consumer = ConsumerState(request: request, tag: nil, retryAt: nil)
            pendingConsumerStart = request.started
        case .maintenance(_, let done):
            done.resume(throwing: AMQPError.connectionLost("not connected"))
        case .cancelConsumer(let done):
            consumer?.request.deliveries.finish()
            consumer = nil
            done.resume()
        case .close(_, let done):
            closeWaiters.append(done)
            finish(with: AMQPError.closed)
        case .run(let job):
            job.runSynchronously(on: executor.asUnownedTaskExecutor())
        }
    }

    /// Answers the declares and the consumer start that waited for the connection.
    func flushPendingStarts() {
        for (_, done) in pendingDeclares { done.resume() }
        pendingDeclares.removeAll()
        pendingConsumerStart?.resume()
        pendingConsumerStart = nil
    }

    func handle(_ command: ConnectionCommand, on session: RabbitMQSession) throws {
        switch command {
        case .publish(let pending):
            if let refused = machine.enqueue(pending) { answer([refused]) }
        case .settle(let tag, let deliveryEpoch, let settlement):
            if let settle = machine.settle(tag, epoch: deliveryEpoch, settlement) { try send(settle, on: session) }
        case .declare(let topology, let done):
            do {
                try declare(topology, on: session)
                topologies.append(topology)
                done.resume()
            } catch {
                done.resume(throwing: error)
                throw error
            }
        case .consume(let request):
            guard consumer == nil else {
                request.started.resume(throwing: AMQPError.protocolError("this connection already has a consumer"))
                return
            }
            consumer = ConsumerState(request: request, tag: nil, retryAt: nil)
            do {
                try startConsumer(on: session)
                request.started.resume()
            } catch {
                consumer = nil
                request.started.resume(throwing: error)
                throw error
            }
        case .maintenance(let operation, let done):
            do {
                switch operation {
                case .deleteQueue(let name): try session.deleteQueue(name)
                case .deleteExchange(let name): try session.deleteExchange(name)
                case .unbind(let binding): try session.unbind(binding)
                case .inspectQueue(let name):
                    done.resume(returning: try session.inspectQueue(name))
                    return
                }
                done.resume(returning: nil)
            } catch {
                done.resume(throwing: error)
                throw error
            }
        case .cancelConsumer(let done):
            let tag = consumer?.tag
            consumer?.tag = nil
            consumer?.retryAt = nil
            consumer?.cancelled = true
            // Cancelled either way: if the broker call fails, the channel or connection is gone
            // and its recovery does not start a cancelled consumer again.
            defer { done.resume() }
            if let tag { try session.cancel(consumerTag: tag) }
        case .close(let grace, let done):
            machine.close(grace: grace, now: .now)
            closeWaiters.append(done)
            if let tag = consumer?.tag {
                try session.cancel(consumerTag: tag)
                consumer?.tag = nil
                consumer?.retryAt = nil
            }
        case .run(let job):
            job.runSynchronously(on: executor.asUnownedTaskExecutor())
        }
    }

    /// Answers a command that arrived after the loop ended: it fails with `error`, or runs elsewhere.
    func abandon(_ command: ConnectionCommand, with error: any Error) {
        switch command {
        case .publish(let pending): pending.continuation.resume(throwing: error)
        case .settle: break
        case .declare(_, let done): done.resume(throwing: error)
        case .maintenance(_, let done): done.resume(throwing: error)
        case .cancelConsumer(let done): done.resume()
        case .consume(let request):
            request.started.resume(throwing: error)
            request.deliveries.finish()
        case .close(_, let done): done.resume()
        case .run(let job): AMQPConnectionExecutor.runElsewhere(job)
        }
    }
}
