import Benchmark
import BenchSupport
import Foundation

/// What a Swift user would reach for instead of our shim: swift-crypto's `_CryptoExtras` RSA-OAEP
/// (SHA-256) decrypt, on the same key and cryptograms as the Decrypt suite.
let benchmarks: @Sendable () -> Void = {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let key = Fixtures.swiftCryptoKey()
    let cards = Fixtures.cardData(count: 64)
    let perThread = 20
    precondition(Decryptions.swiftCrypto(key, cards[0]) > 0, "swift-crypto cannot decrypt the fixtures")

    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .cpuTotal, .mallocCountTotal],
        warmupIterations: 20,
        maxDuration: .seconds(5),
        maxIterations: 100_000
    )

    Benchmark("_RSA.Encryption.PrivateKey.decrypt OAEP-SHA256, 1 thread") { benchmark in
        for i in benchmark.scaledIterations {
            blackHole(Decryptions.swiftCrypto(key, cards[i % cards.count]))
        }
    }

    Benchmark("_RSA.Encryption.PrivateKey.decrypt, all \(cores) cores (iteration = \(cores * perThread) decryptions)",
              configuration: .init(maxIterations: 1_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            DispatchQueue.concurrentPerform(iterations: cores) { t in
                for i in 0..<perThread { blackHole(Decryptions.swiftCrypto(key, cards[(t * perThread + i) % cards.count])) }
            }
        }
    }
}
