import Benchmark
import BenchSupport
import Foundation

/// The whole makePayment pipeline in process, one payment per iteration: JSON decode, token check,
/// idempotency, decrypt, parse, simulator acquirer, map, two SQLite writes (fsync'd, group commit),
/// JSON encode. Its mallocs per iteration are the allocations of one makePayment (the store's
/// writer thread included), and should stay a small, fixed number.
let benchmarks: @Sendable () -> Void = {
    /// Each payment is processed once, so the rig is registered with enough of them up front.
    let payments = 12_000

    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .cpuTotal, .mallocCountTotal, .mallocCountSmall, .mallocCountLarge,
                  .memoryLeakedBytes],
        warmupIterations: 50,
        maxDuration: .seconds(5),
        maxIterations: payments - 100
    )

    Benchmark("makePayment, one at a time (decode → pipeline → encode)",
              configuration: Benchmark.defaultConfiguration,
              closure: { benchmark async in
                  let rig = await PipelineHolder.shared.rig!
                  for _ in benchmark.scaledIterations {
                      blackHole(await rig.makePayment())
                  }
              },
              setup: { try await PipelineHolder.shared.start(payments: payments) },
              teardown: { await PipelineHolder.shared.stop() })
}

/// Holds the rig between setup and teardown.
actor PipelineHolder {
    static let shared = PipelineHolder()
    var rig: PipelineRig?
    func start(payments: Int) async throws { rig = try await PipelineRig(payments: payments) }
    func stop() async { await rig?.close(); rig = nil }
}
