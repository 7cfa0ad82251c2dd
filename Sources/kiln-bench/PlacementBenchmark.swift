import ArgumentParser
import Foundation
import KilnPool
import KilnPredict
import KilnTools
import KilnWorker

/// `kiln-bench placement`: what placing one invocation costs the worker — scoring every
/// candidate with the latency model, learning from the outcome, rendering the explanation the
/// history keeps — with the learned model beside the EWMA baseline.
struct PlacementBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "placement",
        abstract: "The cost of a placement decision: the learned model against EWMA, per invocation."
    )

    @Option(help: "Idle VMs among the candidates (a new VM is one more).")
    var idle = 8

    @Option(help: "Seconds to measure each row.")
    var seconds: Double = 2

    func run() throws {
        print("kiln-bench placement: \(idle) idle VMs + a new one per decision; models trained on 2,000 synthetic outcomes")
        let host = HostSample(cpuUtilization: 0.6, cpuCount: 2, memoryTotalMB: 24_000, memoryAvailableMB: 20_000,
                              memoryPressure: 0.01, networkReceiveBps: 0, networkTransmitBps: 0)
        let candidates = (0..<idle).map { index in
            PlacementCandidate(
                kind: .idle(vm: "q\(index)"), profile: .small, lastMethod: index.isMultiple(of: 3) ? "echo" : "resize", uses: index * 40)
        } + [PlacementCandidate(kind: .provision, profile: .small)]
        let request = PlacementRequest(invocationID: "bench", method: "resize", profile: "small")
        let invocation = InvocationTraits(method: "resize", args: ["width": 640, "height": 480], argsBytes: 180, deadlineMs: 5_000)
        let load = PoolLoad(busy: 2, waiting: 0, idle: idle, provisioning: 0)

        var table = TextTable("step", "model", "µs per invocation", "per second")
        for predictor in [LearnedPredictor() as any LatencyPredictor, EWMAPredictor()] {
            train(predictor)
            let placement = InvocationPlacement(scorer: SuitabilityScorer(predictor: predictor), invocation: invocation, backend: "qemu")
            let choose = bestRate(seconds: seconds) { _ = placement.place(request, among: candidates, load: load, host: host) }
            table.add("score \(candidates.count) candidates, pick one", predictor.name, formatted(1e6 / choose, decimals: 2), formatted(choose))
            var round = 0
            let observe = bestRate(seconds: seconds) {
                round += 1
                predictor.observe(outcome(round))
            }
            table.add("learn from the outcome", predictor.name, formatted(1e6 / observe, decimals: 2), formatted(observe))
        }
        let placement = InvocationPlacement(scorer: SuitabilityScorer(predictor: EWMAPredictor()), invocation: invocation, backend: "qemu")
        let decision = placement.place(request, among: candidates, load: load, host: host)!.decision
        let explain = bestRate(seconds: seconds) { _ = decision.explanation.joined(separator: "\n") }
        table.add("render the explanation (history)", "-", formatted(1e6 / explain, decimals: 2), formatted(explain))
        print(table.render())
    }

    private func features(warmth: VMWarmth, reuse: Int, cpu: Double) -> PlacementFeatures {
        PlacementFeatures(
            method: "resize", argsBytes: 180, numericArgs: ["width": 640, "height": 480], profile: "small", backend: "qemu",
            warmth: warmth, reuseCount: reuse, hostCPU: cpu, concurrentExecutions: 2, idleVMs: idle)
    }

    /// Outcomes whose time grows with the image size and the host's load, with noise.
    private func outcome(_ round: Int) -> ExecutionOutcome {
        var generator = SeededRandom(seed: UInt64(round))
        let width = Double(64 + generator.next() % 1_024)
        let cpu = Double(generator.next() % 100) / 100
        var features = features(warmth: round.isMultiple(of: 5) ? .fresh : .warmForMethod, reuse: round % 300, cpu: cpu)
        features.numericArgs = ["width": width, "height": width * 0.75]
        let noise = 0.9 + Double(generator.next() % 200) / 1_000
        return ExecutionOutcome(features: features, provisionUs: 0, execUs: (300 + width * width * 0.004) * (1 + cpu) * noise, succeeded: true)
    }

    private func train(_ predictor: any LatencyPredictor) {
        for round in 0..<2_000 { predictor.observe(outcome(round)) }
        for round in 0..<50 {
            predictor.observeProvisioning(ProvisionOutcome(backend: "qemu", profile: "small", durationUs: 30_000 + Double(round % 7) * 1_000))
        }
    }
}
