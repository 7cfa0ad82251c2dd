@testable import KilnAMQP
import Testing

/// The connection's bookkeeping without a broker: the publish window, confirms and returns,
/// ack coalescing, stale settlements, the close's grace period and the reconnect backoff.
@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    struct Publish: RoutedPublish, Equatable {
        let id: Int
        var exchange = "kiln"
        var routingKey = "invoke"
    }

    typealias Machine = ConnectionStateMachine<Publish>
    let start = ContinuousClock.now
    /// Delays of 100, 200, 400 ms … without jitter.
    let backoff = AMQPConfiguration.ReconnectPolicy(initialDelay: .milliseconds(100), maximumDelay: .seconds(1), multiplier: 2, jitter: 0)

    func machine(window: Int = 256, retry: Bool = true) -> Machine {
        var machine = Machine(publishWindow: window, retryUnconfirmed: retry, reconnect: backoff, random: { 0.5 })
        machine.opened()
        return machine
    }

    /// Sends what the window allows; returns the ids sent.
    func sendAll(_ machine: inout Machine) -> [Int] {
        var sent: [Int] = []
        while let publish = machine.nextToSend() {
            machine.sent(publish)
            sent.append(publish.id)
        }
        return sent
    }

    func outcome(_ answers: [Machine.Answer]) -> [String] {
        answers.map { answer in
            switch answer {
            case .confirmed(let publish): return "\(publish.id) ok"
            case .failed(let publish, let error): return "\(publish.id) \(error)"
            }
        }
    }

    @Test func theWindowHoldsBackPublishesUntilConfirmsMakeRoom() {
        var machine = machine(window: 2)
        for id in 1...5 { #expect(machine.enqueue(Publish(id: id)) == nil) }
        #expect(sendAll(&machine) == [1, 2])
        #expect(outcome(machine.confirm(upTo: 1, multiple: false, nacked: false)) == ["1 ok"])
        #expect(sendAll(&machine) == [3])
        // One multiple ack confirms every publish up to its tag.
        #expect(outcome(machine.confirm(upTo: 3, multiple: true, nacked: false)) == ["2 ok", "3 ok"])
        #expect(sendAll(&machine) == [4, 5])
        #expect(outcome(machine.confirm(upTo: 5, multiple: true, nacked: true)).count == 2)
        #expect(machine.nothingInFlight)
    }

    @Test func aPublishThatCouldNotBeSentGoesFirstNextTime() {
        var machine = machine(window: 4)
        for id in 1...3 { _ = machine.enqueue(Publish(id: id)) }
        let first = machine.nextToSend()!
        machine.notSent(first)
        #expect(sendAll(&machine) == [1, 2, 3])
    }

    @Test func aReturnFailsOnlyThePublishWhoseConfirmFollowsIt() {
        var machine = machine()
        _ = machine.enqueue(Publish(id: 1, routingKey: "a"))
        _ = machine.enqueue(Publish(id: 2, routingKey: "b"))
        _ = sendAll(&machine)
        machine.returned(exchange: "kiln", routingKey: "b", code: 312, text: "NO_ROUTE")
        // The return is for the second publish: the first's confirm does not take it.
        #expect(outcome(machine.confirm(upTo: 1, multiple: false, nacked: false)) == ["1 ok"])
        let second = outcome(machine.confirm(upTo: 2, multiple: false, nacked: false))
        #expect(second.count == 1 && second[0].hasPrefix("2 ") && second[0].contains("NO_ROUTE"), "\(second)")
    }

    @Test func consecutiveAcksBecomeOneMultipleAckButNotOverAnUnsettledDelivery() {
        var machine = machine()
        for tag in 1...4 { _ = machine.delivered(UInt64(tag)) }
        for tag in 1...3 { #expect(machine.settle(UInt64(tag), epoch: machine.epoch, .ack) == nil) }
        #expect(machine.takeAcks() == [.ack(3, multiple: true)])

        // Tag 6 acked while 5 is unsettled: a multiple ack would settle 5 too.
        for tag in 5...6 { _ = machine.delivered(UInt64(tag)) }
        _ = machine.settle(4, epoch: machine.epoch, .ack)
        _ = machine.settle(6, epoch: machine.epoch, .ack)
        #expect(machine.takeAcks() == [.ack(4, multiple: false), .ack(6, multiple: false)])
        #expect(machine.settle(5, epoch: machine.epoch, .reject(requeue: false)) == .reject(5, requeue: false))
        #expect(machine.unsettled == 0)
    }

    @Test func aSettlementFromAnEarlierConnectionOrASecondOneSendsNothing() {
        var machine = machine()
        _ = machine.delivered(1)
        let earlier = machine.epoch
        _ = machine.connectionLost(.heartbeatTimeout, now: start)
        machine.opened()
        _ = machine.delivered(1)
        #expect(machine.settle(1, epoch: earlier, .nack(requeue: true)) == nil, "tag 1 of the old connection is another message")
        #expect(machine.settle(1, epoch: machine.epoch, .nack(requeue: true)) == .nack(1, requeue: true))
        #expect(machine.settle(1, epoch: machine.epoch, .nack(requeue: true)) == nil, "settled twice")
    }

    @Test func aLostConnectionResendsUnconfirmedPublishesFirstInTheirOrder() {
        var machine = machine(window: 2)
        for id in 1...3 { _ = machine.enqueue(Publish(id: id)) }
        _ = sendAll(&machine)
        let (answers, next) = machine.connectionLost(.heartbeatTimeout, now: start)
        #expect(answers.isEmpty)
        #expect(next == .reconnect(at: start + .milliseconds(100)))
        // While disconnected, new publishes queue behind those.
        #expect(machine.enqueue(Publish(id: 4)) == nil)
        machine.opened()
        #expect(sendAll(&machine) == [1, 2])
        #expect(outcome(machine.confirm(upTo: 1, multiple: false, nacked: false)) == ["1 ok"], "sequence numbers start over")
    }

    @Test func withoutRetryALostConnectionFailsWhatWasUnconfirmedAndRefusesNewPublishes() {
        var machine = machine(retry: false)
        _ = machine.enqueue(Publish(id: 1))
        _ = sendAll(&machine)
        let (answers, _) = machine.connectionLost(.heartbeatTimeout, now: start)
        #expect(outcome(answers) == ["1 \(AMQPError.heartbeatTimeout)"])
        #expect(machine.enqueue(Publish(id: 2)).map { outcome([$0]) } == ["2 \(AMQPError.connectionLost("not connected"))"])
    }

    @Test func reconnectDelaysGrowWithEachFailureAndStartOverOnceConnected() {
        var machine = machine()
        _ = machine.connectionLost(.heartbeatTimeout, now: start)
        #expect(!machine.reconnectDue(now: start + .milliseconds(99)))
        #expect(machine.reconnectDue(now: start + .milliseconds(100)))
        machine.reconnectFailed(now: start + .seconds(1))
        #expect(machine.reconnectAt == start + .seconds(1) + .milliseconds(200))
        machine.reconnectFailed(now: start + .seconds(2))
        #expect(machine.reconnectAt == start + .seconds(2) + .milliseconds(400))
        machine.opened()
        _ = machine.connectionLost(.heartbeatTimeout, now: start + .seconds(3))
        #expect(machine.reconnectAt == start + .seconds(3) + .milliseconds(100))
    }

    @Test func aChannelErrorFailsThePublishesToTheMissingExchangeAndResendsTheRest() {
        var machine = machine()
        _ = machine.enqueue(Publish(id: 1, exchange: "gone"))
        _ = machine.enqueue(Publish(id: 2, exchange: "kiln"))
        _ = sendAll(&machine)
        let error = AMQPError.channelClosed(code: 404, text: "NOT_FOUND - no exchange 'gone' in vhost '/'")
        #expect(outcome(machine.channelClosed(error, text: "NOT_FOUND - no exchange 'gone' in vhost '/'")) == ["1 \(error)"])
        machine.opened()
        #expect(sendAll(&machine) == [2])
    }

    @Test func aCloseWaitsForWhatIsInFlightUntilItsGraceEnds() {
        var machine = machine()
        #expect(machine.closeStep(now: start) == .open)
        _ = machine.enqueue(Publish(id: 1))
        _ = sendAll(&machine)
        _ = machine.delivered(7)
        machine.close(grace: .seconds(5), now: start)
        #expect(machine.closeStep(now: start + .seconds(1)) == .waitForDrain)
        // A second close with a shorter grace brings the deadline forward, never back.
        machine.close(grace: .seconds(2), now: start + .seconds(1))
        machine.close(grace: .seconds(60), now: start + .seconds(1))
        #expect(machine.closeDeadline == start + .seconds(3))
        #expect(machine.closeStep(now: start + .seconds(3)) == .closeNow(unconfirmed: 1, unsettled: 1))
    }

    @Test func aCloseGoesAtOnceWhenEverythingIsSettled() {
        var machine = machine()
        _ = machine.enqueue(Publish(id: 1))
        _ = sendAll(&machine)
        _ = machine.delivered(7)
        machine.close(grace: .seconds(600), now: start)
        _ = machine.confirm(upTo: 1, multiple: false, nacked: false)
        #expect(machine.closeStep(now: start) == .waitForDrain)
        _ = machine.settle(7, epoch: machine.epoch, .ack)
        #expect(machine.closeStep(now: start) == .closeNow(unconfirmed: 0, unsettled: 0))
    }

    @Test func aConnectionLostWhileClosingEndsItAndFinishHandsBackEverythingLeft() {
        var machine = machine(window: 1)
        for id in 1...3 { _ = machine.enqueue(Publish(id: id)) }
        _ = sendAll(&machine)
        machine.close(grace: .seconds(600), now: start)
        #expect(machine.connectionLost(.heartbeatTimeout, now: start).next == .finish)
        #expect(machine.finish().map(\.id) == [1, 2, 3])
        #expect(machine.nothingInFlight && machine.closeStep(now: start) == .open)
    }
}
