import ArgumentParser
import Foundation
import KilnPredict
import KilnTools
import KilnVM
import KilnWire
import KilnWorker
import Logging

/// `kiln predict generate|eval`: make a training history on real VMs and measure the latency
/// models on it.
struct PredictCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict", abstract: "Generate training histories and evaluate the latency models.",
        subcommands: [Generate.self, Evaluate.self])

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the example methods on real VMs under varied load and write what happened (MessagePack).")

        @Option(help: "qemu or process.")
        var backend = "qemu"

        @Option(help: "Invocations to run.")
        var invocations = 1_200

        @Option(help: "The guest image.")
        var image = ".local/images/current"

        @Option(help: "Where to write the records.")
        var output = ".local/history-generated.msgpack"

        @Option(help: "The random seed.")
        var seed: UInt64 = 7

        func run() async throws {
            Kiln.bootstrapLogging()
            let logger = Logger(label: "kiln.predict")
            let guestImage = try GuestImage.open(directory: image)
            let driver: any MicroVMDriver = backend == "process"
                ? try ProcessSandboxDriver(image: guestImage, logger: logger) : try QEMUDriver(image: guestImage, logger: logger)
            var settings = TrainingHistoryGenerator.Settings()
            settings.invocations = invocations
            settings.seed = seed
            let started = ContinuousClock.now
            let generator = TrainingHistoryGenerator(
                driver: driver, backend: await driver.backend.name, manifest: guestImage.manifest, settings: settings, logger: logger)
            let records = try await generator.generate { print("==> \($0)") }
            await driver.shutdown()
            try Data(try MessagePackEncoder().encode(records)).write(to: URL(fileURLWithPath: output))
            print("wrote \(records.count) records to \(output) in \((ContinuousClock.now - started).text)")
        }
    }

    struct Evaluate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "eval",
            abstract: "Replay a history: train on the first part, report MAE, MAPE and p90 error on the rest, per method, against EWMA.")

        @Option(help: "A MessagePack history (kiln predict generate, kiln history export) or a history database.")
        var history = ".local/history-generated.msgpack"

        @Option(help: "The share of records used for training only.")
        var split = 0.8

        @Option(help: "Write a calibration plot (predicted against actual) here, as SVG.")
        var plot: String?

        func run() throws {
            let loaded = try HistoryCommand.load(history)
            let (records, skipped) = HistoryReplay.usable(loaded)
            if skipped.otherSchema + skipped.notFinite > 0 { print("of \(loaded.count) records: \(skipped.description)") }
            guard records.count >= 20 else { throw CommandFailure("\(records.count) usable records are too few to evaluate") }
            let evaluation = PredictionEvaluation(trainingShare: split)
            let learned = evaluation.run(records) { LearnedPredictor() }
            let baseline = evaluation.run(records) { EWMAPredictor() }
            print("held out: \(learned.overall.count) of \(records.filter(\.succeeded).count) records (the last \(Int((1 - split) * 100))%)")
            print("")
            print("method      model     n      MAE ms   MAPE % median %   p90 %  within 2x  worst")
            for method in learned.byMethod.keys.sorted() {
                for report in [learned, baseline] {
                    let errors = report.byMethod[method]!
                    print(row(method, report.predictor, errors))
                }
            }
            print(row("all", learned.predictor, learned.overall))
            print(row("all", baseline.predictor, baseline.overall))
            let reduction = (1 - learned.overall.mape / max(baseline.overall.mape, 1e-9)) * 100
            print("")
            print(String(format: "MAPE %.1f%% (\(learned.predictor)) against %.1f%% (ewma): %.0f%% lower; MAE %.0f%% lower", learned.overall.mape,
                         baseline.overall.mape, reduction, (1 - learned.overall.mae / max(baseline.overall.mae, 1e-9)) * 100))
            if let plot {
                try CalibrationPlot.svg([learned, baseline], title: "Predicted against actual latency, held-out \(learned.overall.count) invocations")
                    .write(toFile: plot, atomically: true, encoding: .utf8)
                print("calibration plot: \(plot)")
            }
        }

        private func row(_ method: String, _ model: String, _ errors: PredictionEvaluation.Errors) -> String {
            method.padding(toLength: 11, withPad: " ", startingAt: 0) + " " + model.padding(toLength: 6, withPad: " ", startingAt: 0)
                + String(format: " %5d %10.2f %8.1f %8.1f %7.1f %9.0f%% %6.1fx", errors.count, errors.mae / 1_000, errors.mape, errors.medianAPE,
                         errors.p90, errors.withinTwice * 100, errors.worstRatio)
        }
    }
}
