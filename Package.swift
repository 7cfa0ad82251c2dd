// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "KilnWire", targets: ["KilnWire"]),
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
        .executableTarget(
            name: "kiln-bench",
            dependencies: [
                "KilnWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "KilnWireTests",
            dependencies: ["KilnWire"]
        ),
        .testTarget(
            name: "KilnAMQPTests",
            dependencies: ["KilnWire", "CRabbitMQ"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
