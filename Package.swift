// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "KilnWire", targets: ["KilnWire"]),
        .library(name: "KilnAMQP", targets: ["KilnAMQP"]),
        .library(name: "KilnVM", targets: ["KilnVM"]),
        .library(name: "KilnPredict", targets: ["KilnPredict"]),
        .library(name: "KilnPool", targets: ["KilnPool"]),
        .library(name: "KilnWorker", targets: ["KilnWorker"]),
        .library(name: "KilnMethod", targets: ["KilnMethod"]),
        .library(name: "KilnClient", targets: ["KilnClient"]),
        .executable(name: "kiln", targets: ["kiln"]),
        .executable(name: "kiln-agent", targets: ["kiln-agent"]),
        .executable(name: "kiln-examples", targets: ["kiln-examples"]),
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CMsgPack",
            pkgConfig: "msgpack",
            providers: [.apt(["libmsgpack-dev"])]
        ),
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        // Linux calls the Glibc module lacks (epoll, eventfd, clone flags, pidfd), and fork/clone +
        // exec, which Swift cannot do safely itself: namespaces, cgroup placement
        // before exec, the death signal, the descriptor table of the child.
        .target(name: "CKilnHost"),
        .target(
            name: "KilnWire",
            dependencies: ["CMsgPack"]
        ),
        .target(
            name: "KilnAMQP",
            dependencies: ["CRabbitMQ", .product(name: "Logging", package: "swift-log")]
        ),
        // SHA-256 in plain Swift, without Foundation: image hashes on the host, the sha256
        // example method in the guest.
        .target(name: "KilnDigest"),
        .target(
            name: "KilnVM",
            dependencies: [
                "KilnWire",
                "KilnDigest",
                "CKilnHost",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "KilnPredict",
            dependencies: ["KilnWire", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .target(
            name: "KilnPool",
            dependencies: [
                "KilnVM",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "KilnWorker",
            dependencies: [
                "KilnWire",
                "KilnDigest",
                "KilnAMQP",
                "KilnVM",
                "KilnPool",
                "KilnPredict",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // `kiln dashboard`: the fleet's telemetry in a bounded window, served live to a web page
        // (plain HTML, CSS and JavaScript, built into the binary).
        .target(
            name: "KilnDashboard",
            dependencies: [
                "KilnWire",
                "KilnAMQP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            resources: [.embedInCode("Resources/index.html"), .embedInCode("Resources/app.js"), .embedInCode("Resources/app.css")]
        ),
        // The Swift producer client: invoke, submit, map, send; typed errors.
        .target(
            name: "KilnClient",
            dependencies: ["KilnWire", "KilnAMQP", .product(name: "Logging", package: "swift-log")]
        ),
        // What the commands that make training histories and benchmarks share, kept out of the
        // worker's libraries: a history generator on real VMs, seeded randomness, host load.
        .target(
            name: "KilnTools",
            dependencies: [
                "KilnWire",
                "KilnVM",
                "KilnPool",
                "KilnPredict",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "kiln",
            dependencies: [
                "KilnWire",
                "KilnAMQP",
                "KilnDashboard",
                "KilnVM",
                "KilnPool",
                "KilnPredict",
                "KilnWorker",
                "KilnClient",
                "KilnTools",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The guest agent: KilnWire, the spawning shim and Glibc only, no Foundation (it is
        // linked with the Swift stdlib statically and shipped into the guest image).
        .executableTarget(
            name: "kiln-agent",
            dependencies: ["KilnWire", "CKilnHost"]
        ),
        // The Swift method SDK: a type conforming to `KilnMethod` becomes a method program that
        // speaks serve mode and exec mode. KilnWire and Glibc only, no Foundation, so that a
        // method links statically small.
        .target(
            name: "KilnMethod",
            dependencies: ["KilnWire"]
        ),
        // The example method programs (echo, sleep, fail, burn, sha256, and the SDK's echo-sdk and
        // wordcount), one static binary.
        .executableTarget(
            name: "kiln-examples",
            dependencies: ["KilnWire", "KilnDigest", "KilnMethod"]
        ),
        .executableTarget(
            name: "kiln-bench",
            dependencies: [
                "KilnWire",
                "KilnDashboard",
                "KilnAMQP",
                "KilnVM",
                "KilnPool",
                "KilnPredict",
                "KilnWorker",
                "KilnClient",
                "KilnTools",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // What several test targets share: running programs, the test broker's users and hosts.
        .target(name: "KilnTestSupport", path: "Tests/KilnTestSupport"),
        .testTarget(
            name: "KilnWireTests",
            dependencies: ["KilnWire"]
        ),
        .testTarget(
            name: "KilnAMQPTests",
            dependencies: ["KilnAMQP", "KilnWire", "CRabbitMQ", "KilnTestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "KilnDigestTests",
            dependencies: ["KilnDigest"]
        ),
        .testTarget(
            name: "KilnVMTests",
            dependencies: ["KilnVM", "KilnWire", "KilnTestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "KilnMethodTests",
            dependencies: ["KilnMethod", "KilnWire"]
        ),
        .testTarget(
            name: "KilnVMIntegrationTests",
            dependencies: [
                "KilnVM", "KilnWire", "KilnTestSupport", "KilnTools",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "KilnPredictTests",
            dependencies: ["KilnPredict", "KilnWire"]
        ),
        .testTarget(
            name: "KilnToolsTests",
            dependencies: ["KilnTools", "KilnPredict"]
        ),
        .testTarget(
            name: "KilnPoolTests",
            dependencies: ["KilnPool", "KilnVM", "KilnWire", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "KilnWorkerTests",
            dependencies: ["KilnWorker", "KilnClient", "KilnTestSupport"]
        ),
        .testTarget(
            name: "KilnDashboardTests",
            dependencies: ["KilnDashboard", "KilnWire", "KilnAMQP", "KilnTestSupport", .product(name: "Logging", package: "swift-log")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
