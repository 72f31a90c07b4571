// swift-tools-version:6.2
// 6.2: the worker uses Task.immediate (SE-0472), which Swift 6.1 does not have.
import PackageDescription

let package = Package(
    name: "psp-worker",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "psp-worker", targets: ["psp-worker"]),
        .executable(name: "acquirer-sim", targets: ["acquirer-sim"]),
        .library(name: "CardCrypto", targets: ["CardCrypto"]),
        .library(name: "MakePayment", targets: ["MakePayment"]),
        .library(name: "Acquiring", targets: ["Acquiring"]),
        .library(name: "AcquirerConformance", targets: ["AcquirerConformance"]),
        .library(name: "Processing", targets: ["Processing"]),
        .library(name: "PaymentStoreConformance", targets: ["PaymentStoreConformance"]),
        .library(name: "SQLitePaymentStore", targets: ["SQLitePaymentStore"]),
        .library(name: "PSPWorker", targets: ["PSPWorker"]),
        .executable(name: "vipps-sim", targets: ["vipps-sim"]),
        .library(name: "LoadGeneration", targets: ["LoadGeneration"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
    ],
    targets: [
        // The machine's OpenSSL 3, as a system library; nothing else.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]
        ),
        // SQLite 3.54.1, built from its amalgamation with the options below (Sources/CSQLite/README.md
        // says where it comes from and why it is not the system's).
        .target(
            name: "CSQLite",
            exclude: ["README.md"],
            cSettings: [
                // Its symbols stay inside our binaries: an adapter that links another SQLite
                // (the system's, say) gets its own, not ours.
                .define("SQLITE_API", to: "__attribute__((visibility(\"hidden\")))"),
                .define("SQLITE_THREADSAFE", to: "1"),
                // SQLite's recommended options: no global mutex around every malloc to count
                // bytes, no features nothing here uses.
                .define("SQLITE_DEFAULT_MEMSTATUS", to: "0"),
                .define("SQLITE_DQS", to: "0"),
                .define("SQLITE_LIKE_DOESNT_MATCH_BLOBS"),
                .define("SQLITE_MAX_EXPR_DEPTH", to: "0"),
                .define("SQLITE_OMIT_DEPRECATED"),
                .define("SQLITE_OMIT_LOAD_EXTENSION"),
                .define("SQLITE_OMIT_PROGRESS_CALLBACK"),
                .define("SQLITE_OMIT_SHARED_CACHE"),
                .define("SQLITE_USE_ALLOCA"),
                // What a configure script would find on Linux (and macOS): fdatasync for the
                // WAL's syncs (without it, fsync), the reentrant time functions, fallocate.
                .define("HAVE_FDATASYNC", to: "1", .when(platforms: [.linux])),
                .define("HAVE_GMTIME_R", to: "1"),
                .define("HAVE_LOCALTIME_R", to: "1"),
                .define("HAVE_ISNAN", to: "1"),
                .define("HAVE_POSIX_FALLOCATE", to: "1", .when(platforms: [.linux])),
                .define("HAVE_USLEEP", to: "1"),
            ],
            linkerSettings: [.linkedLibrary("m")]
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
        .target(name: "AcquirerConformance", dependencies: ["Acquiring", "MakePayment", "CardCrypto"]),
        // ISO 8583:1987, ASCII (jPOS ISO87APackager): the codec, on the standard library alone.
        .target(name: "ISO8583"),
        // The HTTP JSON acquirer adapter, on a pooled AsyncHTTPClient.
        .target(name: "HTTPAcquirer", dependencies: [
            "Acquiring", "MakePayment", "CardCrypto",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The simulated acquirer host behind `acquirer-sim` (and the adapters' conformance tests).
        .target(name: "AcquirerSimulator", dependencies: [
            "ISO8583", "ISO8583Acquirer", "Acquiring", "MakePayment",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The ISO 8583 acquirer adapter over TCP (SwiftNIO).
        .target(name: "ISO8583Acquirer", dependencies: [
            "ISO8583", "Acquiring", "MakePayment", "CardCrypto",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
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
            "CardCrypto", "MakePayment", "Acquiring", "Processing", "SQLitePaymentStore", "ISO8583Acquirer", "HTTPAcquirer",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
        ]),
        .executableTarget(name: "acquirer-sim", dependencies: [
            "AcquirerSimulator",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "psp-worker", dependencies: [
            "PSPWorker", "CardCrypto", "MakePayment", "SQLitePaymentStore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // vipps-sim's logic: payload preparation, a keep-alive SwiftNIO client, closed and open loops, checks, report.
        .target(name: "LoadGeneration", dependencies: [
            "CardCrypto", "MakePayment", "Acquiring",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        .executableTarget(name: "vipps-sim", dependencies: [
            "LoadGeneration", "CardCrypto",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "ISO8583Tests", dependencies: ["ISO8583"]),
        .testTarget(name: "ISO8583AcquirerTests", dependencies: [
            "ISO8583Acquirer", "AcquirerSimulator", "AcquirerConformance", "Acquiring", "ISO8583", "MakePayment",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "HTTPAcquirerTests", dependencies: [
            "HTTPAcquirer", "AcquirerSimulator", "AcquirerConformance", "Acquiring",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "CardCryptoTests", dependencies: ["CardCrypto"], resources: [.copy("Fixtures")]),
        .testTarget(name: "MakePaymentTests", dependencies: ["MakePayment", "CardCrypto", "LoadGeneration"]),
        .testTarget(name: "AcquiringTests", dependencies: ["Acquiring", "AcquirerConformance", "MakePayment"]),
        .testTarget(name: "ProcessingTests", dependencies: ["Processing", "Acquiring", "MakePayment", "CardCrypto", "SQLitePaymentStore", "PaymentStoreConformance"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SQLitePaymentStoreTests", dependencies: ["SQLitePaymentStore", "PaymentStoreConformance", "Processing", "MakePayment", "Acquiring"]),
        .testTarget(name: "LoadGenerationTests", dependencies: [
            "LoadGeneration", "MakePayment", "CardCrypto", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "PSPWorkerTests", dependencies: [
            "PSPWorker", "psp-worker", "acquirer-sim", "vipps-sim", "SQLitePaymentStore", "Acquiring", "CardCrypto", "MakePayment", "Processing",
            "LoadGeneration", "PaymentStoreConformance",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
        ], resources: [.copy("Fixtures")]),
    ]
)
