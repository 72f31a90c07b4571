import BenchSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// bench-report: measures each figure with fixed-duration loops on real threads, and the ceiling
// with `openssl speed rsa2048` (1 core and -multi <cores>), in 1-second slices interleaved with
// each other, in rounds, then prints one table of medians and ratios to the ceiling.
//
//   bench-report [--rounds 3] [--seconds 5] [--payments 5000] [--in-flight 64] [--threads <cores>]

struct Options {
    var seconds = 5.0
    var payments = 5_000
    var threads = ProcessInfo.processInfo.activeProcessorCount
    var inFlight = 64
    var rounds = 3
    /// Only the ceiling and the pipeline: a quick loop while working on the pipeline.
    var pipelineOnly = false

    static let usage = "usage: bench-report [--rounds 3] [--seconds 5] [--payments 5000] [--in-flight 64] [--threads <cores>] [--pipeline-only]"

    /// Exits with the usage (status 0 for --help, 2 for anything it does not understand).
    static func exit(_ message: String?) -> Never {
        if let message { FileHandle.standardError.write(Data(("bench-report: " + message + "\n" + usage + "\n").utf8)); Glibc.exit(2) }
        print(usage)
        Glibc.exit(0)
    }

    init(_ arguments: [String]) {
        var i = 1
        func value() -> String {
            i += 1
            guard i < arguments.count else { Options.exit("\(arguments[i - 1]) needs a value") }
            return arguments[i]
        }
        func number<T: LosslessStringConvertible>(_ option: String) -> T {
            guard let parsed = T(value()) else { Options.exit("\(option) needs a number") }
            return parsed
        }
        while i < arguments.count {
            switch arguments[i] {
            case "--seconds": seconds = number("--seconds")
            case "--payments": payments = number("--payments")
            case "--threads": threads = max(1, number("--threads"))
            case "--in-flight": inFlight = max(1, number("--in-flight"))
            case "--rounds": rounds = max(1, number("--rounds"))
            case "--pipeline-only": pipelineOnly = true
            case "--help", "-h": Options.exit(nil)
            default: Options.exit("unknown option \(arguments[i])")
            }
            i += 1
        }
    }
}

let options = Options(CommandLine.arguments)
let n = options.threads
func log(_ text: String) { FileHandle.standardError.write(Data(("bench-report: " + text + "\n").utf8)) }

// nonisolated(unsafe): top-level globals are main-actor isolated; these are immutable and Sendable,
// and the measuring threads only read them.
nonisolated(unsafe) let ring = Fixtures.keyRing(concurrency: n)
nonisolated(unsafe) let cards = Fixtures.cardData(count: 256)
nonisolated(unsafe) let swiftCryptoKey = Fixtures.swiftCryptoKey()
precondition(Decryptions.ours(ring, cards[0]) > 0 && Decryptions.swiftCrypto(swiftCryptoKey, cards[0]) > 0)

func measure(_ name: String, threads: Int, seconds: Double = options.seconds,
             _ body: @escaping @Sendable (Int, Int) -> Void) -> Double {
    log("\(name), \(threads) thread(s), \(seconds) s …")
    return Measure.opsPerSecond(threads: threads, seconds: seconds, body)
}

/// The OPENSSL_ia32cap this process runs with, if any: it picks libcrypto's RSA code path (see
/// README, "RSA code path"), for our shim and swift-crypto's BoringSSL alike, which read it at load.
let codePath = ProcessInfo.processInfo.environment["OPENSSL_ia32cap"]

/// `openssl speed -seconds S [-multi N] rsa2048`, run here so that it interleaves with our figures:
/// on a shared or virtual machine the speed drifts, and a ratio is only fair within one round.
/// The ceiling is openssl as installed, so its environment never has OPENSSL_ia32cap; with
/// `samePath`, it runs on this process's code path instead (the ceiling of that path).
func opensslSignsPerSecond(multi: Int?, seconds: Int = Int(options.seconds), samePath: Bool = false) -> Double {
    // -elapsed: per second of wall-clock time, as every figure of ours is (by default openssl
    // counts per second of its own CPU time, which leaves out time another process or the
    // hypervisor took from it: a ceiling no wall-clock figure could reach).
    var arguments = ["speed", "-elapsed", "-seconds", String(seconds), "-mr"]
    if let multi { arguments += ["-multi", String(multi)] }
    arguments.append("rsa2048")
    log((samePath ? "OPENSSL_ia32cap=\(codePath ?? "") " : "") + "openssl " + arguments.joined(separator: " ") + " …")
    let output = runUnblocked(["openssl"] + arguments, keepCodePath: samePath)
    // -mr: "+F2:<index>:<bits>:<sign/s>:<verify/s>" (OpenSSL 3.0) or with encrypt/s and decrypt/s
    // after them (3.2+, whose human table has other columns); with -multi the last is the sum.
    // OpenSSL 1.1.1 gives seconds per sign there instead (always under 1: no RSA-2048 sign takes a second).
    guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("+F2:") }),
          case let fields = line.split(separator: ":"), fields.count >= 5, fields[2] == "2048",
          let value = Double(fields[3]), value > 0
    else { fatalError("no +F2 line for rsa2048 in openssl speed -mr's output") }
    return value < 1 ? 1 / value : value
}

/// Runs a command and returns its standard output. Spawned with an empty signal mask and SIGALRM at
/// its default: after an `await` this code may run on a pool thread that blocks signals, and
/// `openssl speed -seconds` stops on SIGALRM, so it would inherit the block and never stop.
func runUnblocked(_ argv: [String], keepCodePath: Bool) -> String {
    var pipe: [Int32] = [0, 0]
    guard Glibc.pipe(&pipe) == 0 else { fatalError("pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
    posix_spawn_file_actions_addclose(&actions, pipe[0])
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var alarm = sigset_t()
    sigemptyset(&alarm)
    sigaddset(&alarm, SIGALRM)
    posix_spawnattr_setsigdefault(&attributes, &alarm)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let cArguments = argv.map { strdup($0) } + [nil]
    let cEnvironment = ProcessInfo.processInfo.environment
        .filter { keepCodePath || $0.key != "OPENSSL_ia32cap" }
        .map { strdup($0.key + "=" + $0.value) } + [nil]
    let spawned = posix_spawnp(&pid, argv[0], &actions, &attributes, cArguments, cEnvironment)
    cArguments.forEach { free($0) }
    cEnvironment.forEach { free($0) }
    posix_spawn_file_actions_destroy(&actions)
    posix_spawnattr_destroy(&attributes)
    close(pipe[1])
    guard spawned == 0 else { fatalError("cannot run \(argv[0]): \(String(cString: strerror(spawned)))") }
    let output = FileHandle(fileDescriptor: pipe[0], closeOnDealloc: true).readDataToEndOfFile()
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return String(decoding: output, as: UTF8.self)
}

struct Round {
    var ceilingOne = 0.0, ceilingAll = 0.0
    var oursOne = 0.0, oursAll = 0.0, parsedOne = 0.0, parsedAll = 0.0, swiftCryptoOne = 0.0, swiftCryptoAll = 0.0, pipeline = 0.0
    /// Process CPU time (user + system, every thread) per makePayment, in microseconds.
    var pipelineCPU = 0.0
    /// The part of it on the store's writer thread (statements, commits, fsyncs, resuming callers).
    var pipelineWriterCPU = 0.0
    /// `openssl speed -multi` measured in slices between the pipeline's.
    var pipelineCeiling = 0.0
    /// Two bounds, in slices beside the pipeline's (not figures of the worker): the pipeline with
    /// the store's writes skipped (`WritesSkippedStore`), which says what the two durable writes
    /// per makePayment cost, and with them appended to a file (`JournalBoundStore`), which says
    /// how much of that a store built as a journal would save.
    var writesSkipped = 0.0, writesSkippedCPU = 0.0, journal = 0.0, journalCPU = 0.0
    /// The same ceilings on this process's code path, when OPENSSL_ia32cap is set.
    var samePathOne = 0.0, samePathAll = 0.0, samePathPipeline = 0.0
}

var rounds: [Round] = []
/// What makes a figure untrustworthy (payments that failed, a rig run dry, a store on tmpfs): printed
/// under the table, and the exit status is then 1.
nonisolated(unsafe) var warnings: [String] = []
for r in 1...options.rounds {
    log("round \(r) of \(options.rounds)")
    var round = Round()
    if options.pipelineOnly {
        try await measurePipeline(&round)
        rounds.append(round)
        continue
    }
    // Each figure in 1-second slices, the slices of all figures interleaved: the VM's speed drifts
    // within seconds, and a ratio between two figures is only fair if both saw the same drift.
    let slices = max(1, Int(options.seconds.rounded()))
    for _ in 0..<slices {
        round.ceilingOne += opensslSignsPerSecond(multi: nil, seconds: 1) / Double(slices)
        if codePath != nil { round.samePathOne += opensslSignsPerSecond(multi: nil, seconds: 1, samePath: true) / Double(slices) }
        round.oursOne += measure("ours: withDecryptedCardData", threads: 1, seconds: 1) { _, i in
            _ = Decryptions.ours(ring, cards[i & 255])
        } / Double(slices)
        round.parsedOne += measure("ours: decryptCardData", threads: 1, seconds: 1) { _, i in
            _ = Decryptions.oursParsed(ring, cards[i & 255])
        } / Double(slices)
        round.swiftCryptoOne += measure("swift-crypto: decrypt", threads: 1, seconds: 1) { _, i in
            _ = Decryptions.swiftCrypto(swiftCryptoKey, cards[i & 255])
        } / Double(slices)
        round.ceilingAll += opensslSignsPerSecond(multi: n, seconds: 1) / Double(slices)
        if codePath != nil { round.samePathAll += opensslSignsPerSecond(multi: n, seconds: 1, samePath: true) / Double(slices) }
        round.parsedAll += measure("ours: decryptCardData", threads: n, seconds: 1) { t, i in
            _ = Decryptions.oursParsed(ring, cards[(i + t * 31) & 255])
        } / Double(slices)
        round.oursAll += measure("ours: withDecryptedCardData", threads: n, seconds: 1) { t, i in
            _ = Decryptions.ours(ring, cards[(i + t * 31) & 255])
        } / Double(slices)
        round.swiftCryptoAll += measure("swift-crypto: decrypt", threads: n, seconds: 1) { t, i in
            _ = Decryptions.swiftCrypto(swiftCryptoKey, cards[(i + t * 31) & 255])
        } / Double(slices)
    }
    try await measurePipeline(&round)
    rounds.append(round)
}

/// The pipeline in 1-second slices, each after a 1-second `openssl speed -multi` slice: the pipeline's
/// ratio is to the ceiling measured beside it.
func measurePipeline(_ round: inout Round) async throws {
    let slices = max(1, Int(options.seconds.rounded()))
    // Enough payments for every slice (each payment can be made once): the pipeline cannot outrun
    // the ceiling, so half as many again as it per slice.
    let ceiling = round.ceilingAll > 0 ? round.ceilingAll : opensslSignsPerSecond(multi: n, seconds: 1)
    let payments = max(options.payments, (slices + 1) * Int(ceiling * 1.5))  // (+1: the warm-up)
    log("pipeline: registering \(payments) payments, for the pipeline and for each of its two bounds …")
    let rig = try await PipelineRig(payments: payments)
    let skipped = try await PipelineRig(payments: payments, writes: .skipped)
    let journal = try await PipelineRig(payments: payments, writes: .journal)
    // One unmeasured slice of each first: the registrations' pages are still being written back,
    // and the first payments of a rig fill its caches.
    var cpu = 0.0, writerCPU = 0.0, made = 0, failures = 0
    log("pipeline: warming up, 1 s of each …")
    for each in [rig, skipped, journal] { failures += await each.run(concurrency: options.inFlight, seconds: 1).failures }
    log("pipeline: \(slices) slices of 1 s, \(options.inFlight) in flight …")
    let commitsBefore = rig.store.writerStatistics
    /// A bound's slice: its rate goes into `rate`, its CPU per makePayment is summed for the round.
    var boundCPU: [PipelineRig.Writes: (seconds: Double, made: Int)] = [:]
    func boundSlice(_ bound: PipelineRig, _ writes: PipelineRig.Writes, _ rate: inout Double) async {
        let before = processCPUSeconds()
        let slice = await bound.run(concurrency: options.inFlight, seconds: 1)
        let spent = boundCPU[writes] ?? (0, 0)
        boundCPU[writes] = (spent.seconds + processCPUSeconds() - before, spent.made + slice.made)
        failures += slice.failures
        rate += slice.perSecond / Double(slices)
    }
    for _ in 0..<slices {
        round.pipelineCeiling += opensslSignsPerSecond(multi: n, seconds: 1) / Double(slices)
        if codePath != nil { round.samePathPipeline += opensslSignsPerSecond(multi: n, seconds: 1, samePath: true) / Double(slices) }
        let cpuBefore = processCPUSeconds(), writerBefore = rig.writerCPUSeconds
        let slice = await rig.run(concurrency: options.inFlight, seconds: 1)
        cpu += processCPUSeconds() - cpuBefore
        writerCPU += rig.writerCPUSeconds - writerBefore
        made += slice.made
        failures += slice.failures
        round.pipeline += slice.perSecond / Double(slices)
        await boundSlice(skipped, .skipped, &round.writesSkipped)
        await boundSlice(journal, .journal, &round.journal)
    }
    let commits = rig.store.writerStatistics
    for each in [rig, skipped, journal] {
        await each.close()
        if each.used == each.capacity { warnings.append("a pipeline rig ran out of payments (its rate is too low): raise --payments") }
    }
    if let storage = rig.temporaryStorage { warnings.append("the stores are on \(storage): their fsyncs reach no disk, so the pipeline's figures are not durable ones (set TMPDIR to a folder on a disk)") }
    log("pipeline: \(commits.commits - commitsBefore.commits) commits carried \(commits.writes - commitsBefore.writes) writes")
    round.pipelineCPU = cpu / Double(max(made, 1)) * 1e6
    round.pipelineWriterCPU = writerCPU / Double(max(made, 1)) * 1e6
    func perPayment(_ writes: PipelineRig.Writes) -> Double {
        let spent = boundCPU[writes] ?? (0, 0)
        return spent.seconds / Double(max(spent.made, 1)) * 1e6
    }
    round.writesSkippedCPU = perPayment(.skipped)
    round.journalCPU = perPayment(.journal)
    if failures > 0 { warnings.append("\(failures) pipeline answers were not OK: its figures count payments that failed") }
}

// MARK: the table: medians over the rounds; each ratio is the median of the ratios within a round.

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
@MainActor func figure(_ key: KeyPath<Round, Double>) -> Double { median(rounds.map { $0[keyPath: key] }) }
@MainActor func ratio(_ a: KeyPath<Round, Double>, _ b: KeyPath<Round, Double>) -> Double {
    median(rounds.map { $0[keyPath: a] / $0[keyPath: b] })
}
func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
func row(_ cells: [String]) -> String {
    let widths = [52, 10, 30, 10]
    return zip(cells, widths).map { c, w in c.count >= w ? c + " " : c + String(repeating: " ", count: w - c.count) }.joined()
}

var lines: [String] = []
lines.append("bench-report: nproc \(n), \(options.rounds) rounds of \(Int(options.seconds)) s per figure; medians")
if let codePath {
    lines.append("OPENSSL_ia32cap=\(codePath) for this process (ours and swift-crypto); the ceiling is openssl as installed, "
                 + "and each \"same path\" row is openssl speed with the same OPENSSL_ia32cap")
}
lines.append(row(["figure", "ops/s", "ratio", "target"]))
lines.append(String(repeating: "-", count: 102))
/// A row for the same-path ceiling and, under each figure, its ratio to it (only with OPENSSL_ia32cap).
@MainActor func samePath(_ name: String, _ ceiling: KeyPath<Round, Double>, _ samePath: KeyPath<Round, Double>) {
    guard codePath != nil else { return }
    lines.append(row(["  … " + name + ", same path", f(figure(samePath)), "×" + f(ratio(samePath, ceiling), 3) + " of the ceiling", ""]))
}
@MainActor func ofSamePath(_ figureKey: KeyPath<Round, Double>, _ samePath: KeyPath<Round, Double>, cores: Int) {
    guard codePath != nil else { return }
    lines.append(row(["  … of openssl speed on the same path", "", f(ratio(figureKey, samePath), 3) + " of \(cores)-core same path", ""]))
}
if !options.pipelineOnly {
    lines.append(row(["openssl speed rsa2048 sign/s, 1 core (ceiling)", f(figure(\.ceilingOne)), "1", ""]))
    samePath("openssl speed, 1 core", \.ceilingOne, \.samePathOne)
    lines.append(row(["openssl speed -multi \(n) rsa2048 sign/s (ceiling)", f(figure(\.ceilingAll)), "1", ""]))
    samePath("openssl speed -multi \(n)", \.ceilingAll, \.samePathAll)
    lines.append(row(["ours: withDecryptedCardData, 1 thread", f(figure(\.oursOne)),
                      f(ratio(\.oursOne, \.ceilingOne), 3) + " of 1-core ceiling", "≥ 0.95"]))
    ofSamePath(\.oursOne, \.samePathOne, cores: 1)
    lines.append(row(["ours: decryptCardData (decrypt + parse), 1 thread", f(figure(\.parsedOne)),
                      f(ratio(\.parsedOne, \.ceilingOne), 3) + " of 1-core ceiling", "≥ 0.95"]))
    lines.append(row(["ours: decryptCardData, \(n) threads", f(figure(\.parsedAll)),
                      f(ratio(\.parsedAll, \.ceilingAll), 3) + " of \(n)-core ceiling", ""]))
    ofSamePath(\.parsedAll, \.samePathAll, cores: n)
    // The issue's ×1.9 on 2 cores, as a share of each core: ×0.95 per core here.
    lines.append(row(["  … as a multiple of the 1-core ceiling", "", "×" + f(ratio(\.parsedAll, \.ceilingOne), 3),
                      "≥ ×" + f(0.95 * Double(n), 2)]))
    lines.append(row(["ours: withDecryptedCardData, \(n) threads", f(figure(\.oursAll)),
                      f(ratio(\.oursAll, \.ceilingAll), 3) + " of \(n)-core ceiling", ""]))
}
lines.append(row(["openssl speed -multi \(n), beside the pipeline", f(figure(\.pipelineCeiling)), "1", ""]))
samePath("openssl speed -multi \(n)", \.pipelineCeiling, \.samePathPipeline)
lines.append(row(["pipeline in process, \(options.inFlight) in flight, SQLite (fsync)", f(figure(\.pipeline)),
                  f(ratio(\.pipeline, \.pipelineCeiling), 3) + " of \(n)-core ceiling", "≥ 0.90"]))
ofSamePath(\.pipeline, \.samePathPipeline, cores: n)
lines.append(row(["  … CPU per makePayment (µs, all threads)", f(figure(\.pipelineCPU)),
                  "RSA alone: " + f(1e6 / figure(codePath == nil ? \.pipelineCeiling : \.samePathPipeline) * Double(n)) + " µs", ""]))
lines.append(row(["  … of it on the store's writer thread (µs)", f(figure(\.pipelineWriterCPU)), "", ""]))
// Not figures of the worker: bounds that say where the pipeline's shortfall is (benchmarks/README.md).
lines.append(row(["bound: the pipeline with the store's writes skipped", f(figure(\.writesSkipped)),
                  f(ratio(\.writesSkipped, \.pipelineCeiling), 3) + " of \(n)-core ceiling", "(a bound)"]))
lines.append(row(["  … CPU per makePayment (µs, all threads)", f(figure(\.writesSkippedCPU)), "", ""]))
lines.append(row(["  … so the store's two writes per makePayment take", "",
                  f(median(rounds.map { ($0.writesSkipped - $0.pipeline) / $0.pipelineCeiling }), 3) + " of the ceiling", ""]))
lines.append(row(["bound: the writes appended to a journal file instead", f(figure(\.journal)),
                  f(ratio(\.journal, \.pipelineCeiling), 3) + " of \(n)-core ceiling", "(a bound)"]))
lines.append(row(["  … CPU per makePayment (µs, all threads)", f(figure(\.journalCPU)), "", ""]))
if !options.pipelineOnly {
    lines.append(row(["swift-crypto _RSA decrypt OAEP-SHA256, 1 thread", f(figure(\.swiftCryptoOne)),
                      f(ratio(\.swiftCryptoOne, \.ceilingOne), 3) + " of 1-core ceiling", ""]))
    lines.append(row(["swift-crypto _RSA decrypt OAEP-SHA256, \(n) threads", f(figure(\.swiftCryptoAll)),
                      f(ratio(\.swiftCryptoAll, \.ceilingAll), 3) + " of \(n)-core ceiling", ""]))
    lines.append(row(["ours / swift-crypto, 1 thread", "", "×" + f(ratio(\.oursOne, \.swiftCryptoOne), 3), "> ×1"]))
    // Like for like: both decode the base64, decrypt and look at the plaintext (no parsing).
    lines.append(row(["ours / swift-crypto, \(n) threads", "", "×" + f(ratio(\.oursAll, \.swiftCryptoAll), 3), "> ×1"]))
}
lines.append("openssl speed runs with -elapsed: sign/s per second of wall-clock time, like every figure above")
var warned = Set<String>()  // (each round adds its own)
for warning in warnings where warned.insert(warning).inserted { lines.append("WARNING: " + warning) }
print(lines.joined(separator: "\n"))
if !warnings.isEmpty { Glibc.exit(1) }
