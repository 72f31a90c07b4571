// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "psp-worker",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "psp-worker", targets: ["psp-worker"]),
        .library(name: "CardCrypto", targets: ["CardCrypto"]),
        .library(name: "MakePayment", targets: ["MakePayment"]),
        .library(name: "Acquiring", targets: ["Acquiring"]),
        .library(name: "AcquirerConformance", targets: ["AcquirerConformance"]),
        .library(name: "Processing", targets: ["Processing"]),
        .library(name: "PaymentStoreConformance", targets: ["PaymentStoreConformance"]),
        .library(name: "SQLitePaymentStore", targets: ["SQLitePaymentStore"]),
        .library(name: "PSPWorker", targets: ["PSPWorker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    ],
    targets: [
        // The machine's OpenSSL 3, as a system library; nothing else.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]
        ),
        // The machine's SQLite 3, as a system library; nothing else.
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"]), .brew(["sqlite"])]
        ),
        // The only C we write: opaque handles, size_t lengths, 0/1 results.
        .target(name: "CCardCryptoShim", dependencies: ["COpenSSL"]),
        // Swift owners of the C handles: key ring, decryptor, encryptor, wiped buffers.
        .target(name: "CardCrypto", dependencies: ["CCardCryptoShim"]),
        // The API's vocabulary: models, error catalogue, card data. No I/O.
        .target(name: "MakePayment", dependencies: ["CardCrypto"]),
        // AcquirerAdapter protocol, response-code mapping, the simulator adapter.
        .target(name: "Acquiring", dependencies: [
            "MakePayment",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AcquirerConformance", dependencies: ["Acquiring", "MakePayment"]),
        // The makePayment pipeline, PaymentStore and MakePaymentQueue protocols. No I/O of its own.
        .target(name: "Processing", dependencies: [
            "CardCrypto", "MakePayment", "Acquiring",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "DequeModule", package: "swift-collections"),
        ]),
        .target(name: "PaymentStoreConformance", dependencies: ["Processing", "MakePayment", "Acquiring"]),
        .target(name: "SQLitePaymentStore", dependencies: ["CSQLite", "Processing", "MakePayment", "Acquiring"]),
        // The app: HTTP routes, queue, worker pool, store wiring, configuration.
        .target(name: "PSPWorker", dependencies: [
            "CardCrypto", "MakePayment", "Acquiring", "Processing", "SQLitePaymentStore",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(name: "psp-worker", dependencies: [
            "PSPWorker", "CardCrypto", "MakePayment",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "CardCryptoTests", dependencies: ["CardCrypto"], resources: [.copy("Fixtures")]),
        .testTarget(name: "MakePaymentTests", dependencies: ["MakePayment", "CardCrypto"]),
        .testTarget(name: "AcquiringTests", dependencies: ["Acquiring", "AcquirerConformance", "MakePayment"]),
        .testTarget(name: "ProcessingTests", dependencies: ["Processing", "Acquiring", "MakePayment", "CardCrypto", "SQLitePaymentStore", "PaymentStoreConformance"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SQLitePaymentStoreTests", dependencies: ["SQLitePaymentStore", "PaymentStoreConformance", "Processing"]),
        .testTarget(name: "PSPWorkerTests", dependencies: [
            "PSPWorker", "psp-worker", "SQLitePaymentStore", "Acquiring", "CardCrypto", "MakePayment", "Processing",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ], resources: [.copy("Fixtures")]),
    ]
)
