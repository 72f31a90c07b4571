// swift-tools-version:6.1
// An acquirer adapter written outside the worker, plugged in without changing the worker's code.
import PackageDescription

let package = Package(
    name: "CustomAcquirer",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "psp-worker", path: "../.."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        .target(name: "CustomAcquirer", dependencies: [
            .product(name: "Acquiring", package: "psp-worker"),
            .product(name: "MakePayment", package: "psp-worker"),
        ]),
        .executableTarget(name: "custom-psp-worker", dependencies: [
            "CustomAcquirer",
            .product(name: "PSPWorker", package: "psp-worker"),
            .product(name: "CardCrypto", package: "psp-worker"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "CustomAcquirerTests", dependencies: [
            "CustomAcquirer",
            .product(name: "AcquirerConformance", package: "psp-worker"),
            .product(name: "Acquiring", package: "psp-worker"),
        ]),
    ]
)
