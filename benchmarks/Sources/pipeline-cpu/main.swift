// pipeline-cpu: CPU time per makePayment of the in-process pipeline, over a fixed number of
// payments, for A/B comparisons of two builds (`cpu-ab.sh`). On this VM the CPU time of a payment
// outside RSA drifts by half from one minute to the next; short runs of two builds taking turns
// see the same drift, and the median of their differences is what the change did.
//
//   pipeline-cpu [--payments 5000] [--in-flight 64] [--writes sqlite|skipped|journal]
// (--writes: where the pipeline's attempts and outcomes go; only sqlite is the worker, the others
// are bounds: `WritesSkippedStore`, `JournalBoundStore`.)
// Prints one line: made, CPU µs per payment (all threads), of which the store's writer thread,
// the share of the two cores busy during the run, payments/s, and the writes per group commit.
import BenchSupport
import Foundation

var payments = 5000, inFlight = 64, writes = PipelineRig.Writes.sqlite
func usage() -> Never {
    FileHandle.standardError.write(Data("usage: pipeline-cpu [--payments 5000] [--in-flight 64] [--writes sqlite|skipped|journal]\n".utf8))
    exit(2)
}
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--payments": payments = arguments.next().flatMap(Int.init) ?? payments
    case "--in-flight": inFlight = arguments.next().flatMap(Int.init) ?? inFlight
    case "--writes":
        if let chosen = arguments.next().flatMap(PipelineRig.Writes.init(rawValue:)) { writes = chosen } else { usage() }
    default: usage()
    }
}

let rig = try await PipelineRig(payments: payments, writes: writes)
let cpuBefore = processCPUSeconds(), writerBefore = rig.writerCPUSeconds, statsBefore = rig.store.writerStatistics
let start = ContinuousClock.now
let run = await rig.run(concurrency: inFlight)
let elapsed = ContinuousClock.now - start
let cpu = processCPUSeconds() - cpuBefore, writer = rig.writerCPUSeconds - writerBefore
let stats = rig.store.writerStatistics
let commits = stats.commits - statsBefore.commits, writesCommitted = stats.writes - statsBefore.writes
await rig.close()
let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
print(String(format: "made %d cpu_us %.1f writer_us %.1f busy %.3f per_s %.0f writes_per_commit %.1f", run.made,
             cpu / Double(max(run.made, 1)) * 1e6, writer / Double(max(run.made, 1)) * 1e6, cpu / (wall * cores), run.perSecond,
             Double(writesCommitted) / Double(max(commits, 1))))
exit(run.made == payments && run.failures == 0 ? 0 : 1)
