// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "KilnWire", targets: ["KilnWire"]),
        .library(name: "KilnAMQP", targets: ["KilnAMQP"]),
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
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
        .target(
            name: "KilnWire",
            dependencies: ["CMsgPack"]
        ),
        .target(
            name: "KilnAMQP",
            dependencies: ["CRabbitMQ", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "kiln-bench",
            dependencies: [
                "KilnWire",
                "KilnAMQP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "KilnWireTests",
            dependencies: ["KilnWire"]
        ),
        .testTarget(
            name: "KilnAMQPTests",
            dependencies: ["KilnAMQP", "KilnWire", "CRabbitMQ", .product(name: "Logging", package: "swift-log")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
