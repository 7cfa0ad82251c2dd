import CRabbitMQ
import Foundation

// What the connection's thread does with each frame from the broker.
extension ConnectionLoop {
    func handle(_ frame: amqp_frame_t, on session: RabbitMQSession) throws {
        guard frame.frame_type == AMQP_FRAME_METHOD else { return }
        let method = frame.payload.method
        switch method.id {
        case KILN_AMQP_BASIC_DELIVER:
            let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            let tag = deliver.delivery_tag
            let redelivered = deliver.redelivered != 0
            let exchange = deliver.exchange.string
            let routingKey = deliver.routing_key.string
            let content = try session.readContent()
            guard let consumer else {
                // Nobody consumes any more (cancelled): give it back to the queue at once.
                try session.nack(tag, requeue: true)
                return
            }
            // The broker sends no more until one is settled: the answer is worth waiting for.
            // (Deliveries the broker counted as settled when it sent them are nobody's to settle.)
            if !consumer.request.automaticAcknowledgement, machine.delivered(tag) >= Int(consumer.request.prefetch) {
                expectingCommand = true
            }
            consumer.request.deliveries.yield(AMQPDelivery(
                body: content.body, properties: content.properties, deliveryTag: tag, redelivered: redelivered,
                exchange: exchange, routingKey: routingKey, epoch: epoch.load(ordering: .acquiring),
                connection: self))
        case KILN_AMQP_BASIC_ACK:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            confirmed(upTo: ack.delivery_tag, multiple: ack.multiple != 0, nacked: false)
        case KILN_AMQP_BASIC_NACK:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            confirmed(upTo: nack.delivery_tag, multiple: nack.multiple != 0, nacked: true)
        case KILN_AMQP_BASIC_RETURN:
            let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            machine.returned(
                exchange: returned.exchange.string, routingKey: returned.routing_key.string, code: returned.reply_code,
                text: returned.reply_text.string)
            _ = try session.readContent()
        case KILN_AMQP_BASIC_CANCEL:
            logger.warning("the broker cancelled the consumer of \(consumer?.request.queue ?? "?"); consuming again in 1 s")
            consumer?.tag = nil
            consumer?.retryAt = ContinuousClock.now + .seconds(1)
        case KILN_AMQP_CHANNEL_CLOSE, KILN_AMQP_CONNECTION_CLOSE:
            throw RabbitMQSession.serverError(method, state: session.state, channel: session.channel)
        case KILN_AMQP_CONNECTION_BLOCKED:
            logger.warning("the broker blocked publishing (memory or disk alarm)")
        case KILN_AMQP_CONNECTION_UNBLOCKED:
            logger.info("the broker unblocked publishing")
        default:
            break
        }
    }

    /// Answers the publishes the broker acked or nacked: `tag` alone, or every one up to it.
    func confirmed(upTo tag: UInt64, multiple: Bool, nacked: Bool) {
        answer(machine.confirm(upTo: tag, multiple: multiple, nacked: nacked))
        // Nothing left in flight: the tasks just resumed are the only source of new work.
        if machine.nothingInFlight { expectingCommand = true }
    }
}
