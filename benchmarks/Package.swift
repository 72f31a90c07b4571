// swift-tools-version:6.1
import Foundation
import PackageDescription

// The project is a path dependency, so its identity is the name of the folder it was cloned into
// ("psp-worker", "main", …): work it out instead of hard-coding one clone's name.
let project = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "psp-worker-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        // What a Swift user would pick for RSA-OAEP instead of our OpenSSL shim.
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        // Keys, cryptograms and an in-process pipeline, shared by the suites and the report.
        .target(name: "BenchSupport", dependencies: [
            .product(name: "CardCrypto", package: project),
            .product(name: "MakePayment", package: project),
            .product(name: "Acquiring", package: project),
            .product(name: "Processing", package: project),
            .product(name: "PaymentStoreConformance", package: project),
            .product(name: "SQLitePaymentStore", package: project),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ]),
        // `swift run -c release bench-report`: fixed-duration loops and one table of ratios to the ceiling.
        .executableTarget(name: "bench-report", dependencies: ["BenchSupport"]),
        // CPU per makePayment over a fixed run, for A/B comparisons of two builds (`cpu-ab.sh`).
        .executableTarget(name: "pipeline-cpu", dependencies: ["BenchSupport"]),
    ]
)

// One package-benchmark suite per folder under Benchmarks/: `swift package benchmark`.
for suite in ["Decrypt", "Pipeline", "SwiftCrypto"] {
    package.targets.append(.executableTarget(
        name: suite,
        dependencies: ["BenchSupport", .product(name: "Benchmark", package: "benchmark")],
        path: "Benchmarks/\(suite)",
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    ))
}
