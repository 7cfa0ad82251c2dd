import Foundation
import KilnAMQP
import KilnTestSupport
import Testing

/// The README's "Your first method", step by step as a new user takes it: a package of their own
/// with one method on the `KilnMethod` SDK, tried on the host with `kiln method run`, an image
/// built from its manifest, a worker configured to run that image, and a call to the method.
@Suite("Your first method")
struct QuickstartTests {
    @Test(.timeLimit(.minutes(10)))
    func aMethodInAPackageOfOnesOwnRunsInAWorker() async throws {
        let package = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-greeter-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: package.appendingPathComponent("Sources/greet"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: package) }
        // The package identity of a path dependency is its folder's name (`kiln` for a clone
        // named so; this checkout's folder here).
        let kiln = repositoryRoot.path
        try """
        // swift-tools-version:6.0
        import PackageDescription

        let package = Package(
            name: "greeter",
            dependencies: [.package(path: "\(kiln)")],
            targets: [
                .executableTarget(name: "greet", dependencies: [.product(name: "KilnMethod", package: "\(repositoryRoot.lastPathComponent)")]),
            ]
        )
        """.write(to: package.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
        try """
        import KilnMethod

        @main
        struct Greet: KilnMethod {
            struct Input: Decodable { var name: String }
            struct Output: Encodable { var greeting: String }

            func handle(_ input: Input, context: inout MethodContext) async throws -> Output {
                Output(greeting: "Hello, \\(input.name)!")
            }
        }
        """.write(to: package.appendingPathComponent("Sources/greet/Greet.swift"), atomically: true, encoding: .utf8)
        try """
        {
          "version": 1,
          "programs": { "greet": "swift:greet" },
          "methods": { "greet": { "entry": ["greet"], "mode": "serve", "deadline_ms": 5000 } }
        }
        """.write(to: package.appendingPathComponent("methods.json"), atomically: true, encoding: .utf8)

        // The commands run in the package's folder, with none of the test run's KILN_* settings.
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KILN_") }
        func kilnCommand(_ arguments: [String], _ extra: [String: String] = [:]) throws -> (status: Int32, output: String) {
            try runToCompletion(WorkerProcess.binary, arguments, environment: environment.merging(extra) { $1 }, in: package.path)
        }

        let built = try kilnCommand(["image", "build", "--manifest", "methods.json", "--link", "greeter"])
        #expect(built.status == 0, "\(built.output.suffix(2_000))")
        #expect(built.output.contains("methods    greet"), "\(built.output.suffix(2_000))")

        let tried = try kilnCommand(["method", "run", ".build-guest/methods/release/greet", "--args", #"{"name": "Ada"}"#])
        #expect(tried.status == 0 && tried.output.contains(#"output:  {"greeting":"Hello, Ada!"}"#), "\(tried.output)")

        let config = package.appendingPathComponent("worker.yaml").path
        try "vm:\n  image: \(package.path)/.local/images/greeter\n  image_cache: \(package.path)/.local/images\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let names = KilnNames(prefix: "first-\(UUID().uuidString.prefix(6).lowercased())")
        let worker = try WorkerProcess(names: names, environment: ["KILN_CONFIG": config, "KILN_VM_IMAGE_CACHE": "\(package.path)/.local/images"])
        try await worker.waitUntilReady()

        let called = try kilnCommand(["submit", "greet", "--args", #"{"name": "Ada"}"#, "--wait"],
                                     ["KILN_AMQP_URL": WorkerProcess.brokerURL, "KILN_AMQP_PREFIX": names.prefix])
        #expect(called.status == 0, "\(called.output)\n\(worker.tail())")
        #expect(called.output.contains(#"output:  {"greeting":"Hello, Ada!"}"#), "\(called.output)")
        #expect(worker.stop() == 0)
    }
}
