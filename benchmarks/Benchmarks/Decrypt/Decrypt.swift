import Benchmark
import BenchSupport
import CardCrypto
import Foundation

/// Decryptions per second through the worker's key ring: one thread, and every core at once.
/// Compare with `openssl speed rsa2048` sign/s (the private-key operation): `run.sh` does.
let benchmarks: @Sendable () -> Void = {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let ring = Fixtures.keyRing(concurrency: cores)
    let cards = Fixtures.cardData(count: 64)
    /// Decryptions each thread does per iteration of the all-cores benchmarks, so the cost of
    /// starting the threads is small beside the work.
    let perThread = 20

    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .cpuTotal, .mallocCountTotal],
        warmupIterations: 20,
        maxDuration: .seconds(5),
        maxIterations: 100_000
    )

    Benchmark("withDecryptedCardData, 1 thread") { benchmark in
        for i in benchmark.scaledIterations {
            blackHole(Decryptions.ours(ring, cards[i % cards.count]))
        }
    }

    Benchmark("decryptCardData (decrypt + parse), 1 thread") { benchmark in
        for i in benchmark.scaledIterations {
            blackHole(Decryptions.oursParsed(ring, cards[i % cards.count]))
        }
    }

    Benchmark("decryptCardData, all \(cores) cores (iteration = \(cores * perThread) decryptions)",
              configuration: .init(maxIterations: 1_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            DispatchQueue.concurrentPerform(iterations: cores) { t in
                for i in 0..<perThread { blackHole(Decryptions.oursParsed(ring, cards[(t * perThread + i) % cards.count])) }
            }
        }
    }
}
