import KilnAMQP
import KilnDigest
import KilnPool
import KilnWire
import Logging
import Metrics

/// Cross-host affinity's one step in the pipeline: a keyed invocation taken from the shared queue,
/// on its first delivery, that no VM of this worker has served the key of, is published to the
/// consistent-hash exchange (the key in ``KilnNames/affinityHeader``), which puts it in the queue of
/// the worker the key hashes to; it is acknowledged here once the broker has confirmed the copy.
/// A copy is never forwarded again: the header marks it, in its worker's queue and when it comes
/// back to the shared queue after waiting there too long.
struct AffinityForwarder: Sendable {
    let exchange: String
    let publisher: AMQPConnection
    let pool: VMPool
    let logger: Logger

    /// What the exchange hashes for `key`: the key itself, or its SHA-256 when it is long (the
    /// same on every worker, unlike Swift's seeded hash).
    static func hashInput(_ key: String) -> String {
        key.utf8.count <= 128 ? key : "sha256:" + SHA256.hash(Array(key.utf8)).hexString
    }

    /// Forwards the delivery when it should go to another worker; true when it has (and it is
    /// acknowledged), false when this worker runs it (also when forwarding failed: nothing is lost).
    /// - Parameters:
    ///   - poolKey: The key as the pool keeps it beside its VMs.
    func forwarded(_ invocation: Invocation, delivery: AMQPDelivery, attempt: UInt32, poolKey: String?) async -> Bool {
        guard let key = invocation.affinity?.key, let poolKey,
              delivery.properties.headers[KilnNames.affinityHeader] == nil,
              // A redelivery may have been forwarded already by a worker that died before its ack:
              // it runs where it is, so that no copy of it runs as a first attempt twice.
              attempt == 1,
              await !pool.hasServed(affinityKey: poolKey)
        else { return false }
        var properties = delivery.properties
        properties.headers[KilnNames.affinityHeader] = .string(Self.hashInput(key))
        properties.headers["x-delivery-count"] = nil
        do {
            try await publisher.publish(AMQPMessage(exchange: exchange, routingKey: delivery.routingKey, body: delivery.body, properties: properties))
            try delivery.ack()
        } catch {
            logger.warning("could not forward \(invocation.id.loggable) to its affinity worker (\(error)); running it here")
            return false
        }
        Counter(label: KilnMetric.affinityForwardedTotal.rawValue).increment()
        return true
    }
}
