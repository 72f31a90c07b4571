import ArgumentParser
import Foundation
import CardCrypto
import LoadGeneration
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Plays Vipps against a running psp-worker: registers payments, sends makePayment with a mix of
/// test cards, checks every answer and reports throughput and latency.
@main
struct VippsSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vipps-sim",
        abstract: "Load-test a psp-worker the way Vipps calls it, and check every answer.",
        discussion: """
            Closed loop: --concurrency N requests in flight. Open loop: --rate R requests per second on \
            schedule, latency measured from the intended send time. Exit status 1 when any answer is \
            not what its test card must get.
            """
    )

    @Option(help: "The worker's base URL (plain HTTP).") var url = "http://127.0.0.1:8080"
    @Option(help: "Path of the makePaymentUrl.") var makePaymentPath = "/makePayment"
    @Option(help: "The worker's public key, to encrypt card data with.") var publicKey = "keys-example/psp-public-key.pem"
    // A file, not the token itself: an argument is visible to every user (ps, /proc/PID/cmdline).
    @Option(help: "File holding the admin bearer token for POST /payments (else the environment variable PSP_ADMIN_TOKEN).")
    var adminTokenFile: String?
    @Option(help: "merchantSerialNumber of every payment.") var merchantSerialNumber = "123456"
    @Option(help: "Closed loop: requests in flight. Open loop: connections (default 64).") var concurrency: Int?
    @Option(help: "Open loop: makePayment requests per second, on schedule.") var rate: Double?
    @Option(help: """
        Stop after this many seconds (or at --count, if sooner). A closed loop without --count \
        prepares 5,000 payments a second of it per core, more than a worker here can answer.
        """) var duration: Double?
    @Option(help: "Payments to prepare and send (default 10000 when --duration is not given).") var count: Int?
    @Option(help: """
        Share of each case: approved, a two-digit response code, timeout, bad-cryptogram, wrong-token, \
        duplicate, duplicate-in-flight, no, timeout-status, cancel, luhn, expired.
        """)
    var mix = "approved=90,51=5,05=3,bad-cryptogram=1,wrong-token=1"
    @Option(help: "Seed of the order the cases are sent in.") var seed: UInt64 = 1
    @Option(help: "Seconds to wait for one answer, from its intended send, before counting it as lost (15: Vipps's patience; an answer later than that is one Vipps never read).")
    var requestTimeout: Double = 15
    @Option(help: "Event-loop threads of the client.") var clientThreads = 1
    @Option(help: "Write the report as JSON to this file.") var json: String?
    @Option(help: "Also report throughput and latency for each interval of this many seconds of the timed run (stalls, slow minutes).")
    var interval: Double?
    @Flag(help: "Skip reading duplicates and wrong-token payments back after the run.") var noVerify = false
    @Flag(help: "No progress line, even on a terminal.") var quiet = false
    @Option(help: """
        Prepare and register the payments, then write their makePayment requests to this file \
        (pspTransactionId<TAB>Authorization<TAB>body per line) instead of sending them: for wrk \
        (benchmarks/node-bar/makepayment.lua).
        """)
    var exportRequests: String?
    @Flag(help: "The acquirer drops replies or resets connections (acquirer-sim faults): a case that reaches it may also be answered FAIL 85.")
    var acquirerFaults = false
    @Flag(help: """
        Run under the default scheduling policy. Otherwise, on Linux, vipps-sim runs under SCHED_BATCH: \
        on cores it shares with the worker its wake-ups do not preempt the worker's threads (it keeps \
        its fair share of the CPU, and any delay this causes it counts in the latency it measures).
        """)
    var noBatchScheduling = false

    func validate() throws {
        if let concurrency, concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if let rate, !(rate > 0 && rate <= 1_000_000) { throw ValidationError("--rate must be positive and at most 1,000,000") }
        // In whole milliseconds, as the run counts them: under one would be a run of nothing.
        if let duration, !(duration >= 0.001 && duration <= 1_000_000) { throw ValidationError("--duration must be between 0.001 and 1,000,000 s") }
        // Ten minutes: past that an answer is lost, not slow.
        if !(requestTimeout >= 0.001 && requestTimeout <= 600) { throw ValidationError("--request-timeout must be between 0.001 and 600 s") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if !(1...256).contains(clientThreads) { throw ValidationError("--client-threads must be between 1 and 256") }
        if let interval {
            if !(interval >= 0.1 && interval <= 3_600) { throw ValidationError("--interval must be between 0.1 and 3,600 s") }
            if let duration, duration / interval > Double(Recorder.maxIntervals) {
                throw ValidationError("--interval is too short for --duration: at most \(Recorder.maxIntervals) intervals")
            }
        }
        if ServerAddress(url: url) == nil { throw ValidationError("--url must look like http://HOST:PORT") }
        do { _ = try Mix(parsing: mix) } catch { throw ValidationError("--mix: \(error)") }
    }

    func run() async throws {
        // Trimmed as the worker trims it.
        var fromFile: String?
        if let adminTokenFile {
            do { fromFile = try String(contentsOfFile: adminTokenFile, encoding: .utf8) } catch {
                throw ValidationError("--admin-token-file \(adminTokenFile) cannot be read")
            }
        }
        guard var given = fromFile ?? ProcessInfo.processInfo.environment["PSP_ADMIN_TOKEN"],
              case let token = given.withUTF8({ String(decoding: Secrets.trimmingASCIISpace(UnsafeRawBufferPointer($0)), as: UTF8.self) }),
              !token.isEmpty else {
            throw ValidationError("an admin token is needed: --admin-token-file or PSP_ADMIN_TOKEN")
        }
        let drive: LoadConfiguration.Drive = rate.map { .open(rate: $0, connections: concurrency ?? 64) }
            ?? .closed(concurrency: concurrency ?? 64)
        var configuration = LoadConfiguration(address: ServerAddress(url: url)!, adminToken: token, drive: drive,
                                              mix: try Mix(parsing: mix))
        configuration.makePaymentPath = makePaymentPath
        configuration.publicKeyPath = publicKey
        configuration.merchantSerialNumber = merchantSerialNumber
        configuration.count = count
        configuration.duration = duration.map { .milliseconds(Int64(($0 * 1000).rounded())) }
        configuration.seed = seed
        configuration.requestTimeout = .milliseconds(Int64((requestTimeout * 1000).rounded()))
        configuration.acquirerFaults = acquirerFaults
        configuration.clientThreads = clientThreads
        configuration.verifyIdempotency = !noVerify
        configuration.interval = interval.map { .milliseconds(Int64(($0 * 1000).rounded())) }
        configuration.showProgress = !quiet && isatty(STDERR_FILENO) == 1
        // Every payment is prepared before the run, in memory: a plan that cannot fit is refused
        // here rather than ending in an allocation failure.
        guard configuration.plannedPayments <= LoadConfiguration.maxPlannedPayments else {
            throw ValidationError("\(configuration.plannedPayments) payments would not fit in this machine's memory once prepared "
                                  + "(at most \(LoadConfiguration.maxPlannedPayments)): give a smaller --count, --rate or --duration")
        }

        let log: @Sendable (String) -> Void = { FileHandle.standardError.write(Data(("vipps-sim: " + $0 + "\n").utf8)) }
        // A connection per request in flight (two for a duplicate sent at once), and a margin for
        // the registrations' connections and the process's own files.
        let neededFiles = 2 * (concurrency ?? 64) + 256
        if let files = ProcessLimits.raiseOpenFiles(toAtLeast: neededFiles), files < neededFiles {
            log("the open-file limit (\(files)) is below the \(neededFiles) descriptors this run may need: connections may fail (raise ulimit -n)")
        }
        // Before the run starts its event loops, which inherit the policy from the thread starting them.
        if !noBatchScheduling, (GeneratorScheduling.batchAllThreads() ?? 0) == 0 {
            log("cannot run under SCHED_BATCH here; running under the default scheduling policy")
        }
        if let exportRequests {
            do {
                let written = try await LoadRun(configuration, log: log).exportRequests(to: exportRequests)
                print("wrote \(written) makePayment requests to \(exportRequests)")
            } catch {
                FileHandle.standardError.write(Data("vipps-sim: \(error)\n".utf8))
                throw ExitCode(2)
            }
            return
        }
        let report: Report
        do {
            report = try await LoadRun(configuration, log: log).run()
        } catch {
            FileHandle.standardError.write(Data("vipps-sim: \(error)\n".utf8))
            throw ExitCode(2)
        }
        print(report.text)
        if let json {
            try report.json().write(to: URL(fileURLWithPath: json))
        }
        if !report.passed { throw ExitCode(1) }
    }
}
