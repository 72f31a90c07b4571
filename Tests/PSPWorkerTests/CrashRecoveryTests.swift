import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import PSPWorker
import Synchronization
import Testing

/// `psp-worker serve` as a real process, on a port of its choosing, for tests that kill it.
final class WorkerProcess: @unchecked Sendable {
    // @unchecked: the Process is only touched from the test's own task.
    let process = Process()
    let port: Int

    static var binary: URL {
        // The test resources sit in the build folder next to the products.
        Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("psp-worker")
    }

    /// The client's calls to the worker that may be under way at once. As many as the test makes
    /// calls at once, or fewer to send them in waves: a call beyond them waits for one, behind
    /// calls that may be held seconds by a slow acquirer. (Each call is a connection of its own,
    /// on plain sockets: FoundationNetworking's URLSession on Linux crashes the process now and
    /// then in libdispatch when a session's sockets go away, swift-corelibs-foundation#4791.)
    let callsAtOnce: DispatchSemaphore

    /// `workers` nil: the worker's own default.
    init(store: String, latencyMs: Int, workers: Int? = 8, privateKey: String = "psp-private-key", arguments: [String] = [],
         environment extra: [String: String] = [:], connections: Int = 6) throws {
        callsAtOnce = DispatchSemaphore(value: connections)
        process.executableURL = Self.binary
        process.arguments = ["serve", "--port", "0", "--store", "sqlite:" + store] + (workers.map { ["--workers", String($0)] } ?? [])
            + ["--simulator-latency-ms", String(latencyMs), "--private-key", TestKeys.path(privateKey)]
            + (arguments.contains("--acquirer") ? [] : ["--acquirer", "simulator"]) + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PSP_ADMIN_TOKEN"] = LiveWorker.adminToken
        environment.merge(extra) { $1 }
        process.environment = environment
        // Read the log until the server says where it listens.
        let (found, seen) = try Self.run(process, readingPortAfter: "listening on")
        guard let found else { process.terminate(); throw WorkerDidNotStart(log: seen) }
        port = found
    }

    /// Runs `process` and returns the port it names in its output (`<prefix> 127.0.0.1:PORT`),
    /// read for up to 30 s; then the output is drained for good, so the child never blocks on a
    /// full pipe, by blocking reads on a thread of its own that ends at the output's end (a kill).
    /// Not by a `readabilityHandler`: that is a dispatch source on the pipe, and a pipe closed while
    /// its source was still registered, its descriptor then reused by a socket, crashed the test
    /// process in libdispatch (`_dispatch_event_loop_drain`, a SIGKILL test in CI). Nil, with what
    /// was read, if the line never came.
    static func run(_ process: Process, readingPortAfter prefix: String) throws -> (Int?, String) {
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var seen = ""
        let deadline = Date().addingTimeInterval(30)
        var found: Int?
        while found == nil, Date() < deadline {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
            if let range = seen.range(of: prefix + #" 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                found = Int(seen[range].split(separator: ":").last!)
            }
        }
        let reading = output.fileHandleForReading  // kept open by the thread until the end
        Thread { while !reading.availableData.isEmpty {} }.start()
        return (found, seen)
    }

    struct WorkerDidNotStart: Error { let log: String }
    struct NoAnswer: Error {}

    /// Starts a worker from a thread of its own: the start blocks on the worker's log for up to
    /// 30 s, which on the test pool (one thread per core) would stall every async test meanwhile.
    static func start(store: String, latencyMs: Int, workers: Int? = 8, privateKey: String = "psp-private-key", arguments: [String] = [],
                      environment: [String: String] = [:], connections: Int = 6) async throws -> WorkerProcess {
        try await RawHTTP.offThePool {
            try WorkerProcess(store: store, latencyMs: latencyMs, workers: workers, privateKey: privateKey, arguments: arguments,
                              environment: environment, connections: connections)
        }
    }

    /// Signals the worker without waiting for it (for `defer`), with SIGKILL 20 s later if it is
    /// still running. Waiting here would hold a thread of the test pool (one per core), and with
    /// two tests waiting at once none is left for Foundation to see the exit: `waitUntilExit`
    /// then spun for ever over zombies.
    func kill(_ signal: Int32) {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, signal)
        let process = self.process
        DispatchQueue.global().asyncAfter(deadline: .now() + 20) {
            if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        }
    }

    /// Signals the worker and waits for it to exit, polling without holding a thread; SIGKILL
    /// after 20 s.
    func stop(_ signal: Int32) async throws {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, signal)
        if (try? await waitUntil(within: .seconds(20)) { !self.process.isRunning }) == nil {
            Foundation.kill(process.processIdentifier, SIGKILL)
            try await waitUntil(within: .seconds(20)) { !self.process.isRunning }
        }
    }

    /// One call on a connection of its own; throws when no answer comes (the worker died, say).
    func request(_ method: String, _ path: String, _ body: String? = nil, authorization: String? = nil) async throws -> (Int, String) {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let authorization { text += "Authorization: \(authorization)\r\n" }
        if body != nil { text += "Content-Type: application/json\r\n" }
        text += "Content-Length: \(body?.utf8.count ?? 0)\r\n\r\n" + (body ?? "")
        let port = self.port, callsAtOnce = self.callsAtOnce, request = text
        return try await RawHTTP.offThePool {
            callsAtOnce.wait()
            defer { callsAtOnce.signal() }
            let connection = try RawHTTP.Connection(port: port, timeoutSeconds: 20)
            try connection.send(request)
            guard let answer = try connection.read(answers: 1).first else { throw NoAnswer() }
            return (answer.status, answer.body)
        }
    }

    func register(_ id: String) async throws -> Int {
        try await request("POST", "/payments", """
            {"pspTransactionId":"\(id)","merchantSerialNumber":"123456","merchantOrderId":"o-\(id)","amount":100,"currency":"NOK","makePaymentToken":"token-\(id)","paymentText":"t"}
            """, authorization: "Bearer " + LiveWorker.adminToken).0
    }

    func makePayment(_ id: String, cardData: String) async throws -> (Int, String) {
        try await request("POST", "/makePayment", """
            {"pspTransactionId":"\(id)","merchantSerialNumber":"123456","cardData":"\(cardData)","confirmed":"YES"}
            """, authorization: "token-" + id)
    }

    func show(_ id: String) async throws -> [String: Any] {
        let (_, text) = try await request("GET", "/payments/" + id, authorization: "Bearer " + LiveWorker.adminToken)
        return (try JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }
}

final class Answers: Sendable { let bodies = Mutex<[String: String]>([:]) }

extension WorkerProcess {
    /// Registers `ids`, makes every payment at once (as the connections allow), and SIGKILLs the
    /// worker `delay` after the first answer came. Returns the bodies answered 200 before the kill.
    func killedMidFlight(_ ids: [String], cardData: String, after delay: Duration) async throws -> [String: String] {
        for id in ids { #expect(try await register(id) == 201) }
        let answered = Answers()
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for id in ids {
                    group.addTask {
                        if let (status, body) = try? await self.makePayment(id, cardData: cardData), status == 200 {
                            answered.bodies.withLock { $0[id] = body }
                        }
                    }
                }
            }
        }
        try await waitUntil(within: .seconds(60)) { !answered.bodies.withLock { $0.isEmpty } }
        try await Task.sleep(for: delay)
        try await stop(SIGKILL)
        await load.value
        return answered.bodies.withLock { $0 }
    }
}

/// Polls `condition` every 20 ms until it holds; throws past `within`.
func waitUntil(within limit: Duration, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + limit
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(limit: limit) }
        try await Task.sleep(for: .milliseconds(20))
    }
}

struct TimedOut: Error { let limit: Duration }

/// A folder of its own for a store that outlives one worker process.
struct ScratchStore {
    let directory: URL
    var path: String { directory.appendingPathComponent("store.sqlite").path }
    init(_ name: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(at: directory) }
}

@Suite struct CrashRecoveryTests {
    /// SIGKILL while authorizations are in flight, then a restart on the same store: every answer
    /// given before the kill is given again, nothing is authorized twice, and the attempts the dead
    /// process left open are reversed and answered 85.
    @Test func sigkillUnderLoadLosesNoOutcomeAndNeverAuthorizesTwice() async throws {
        let scratch = try ScratchStore("crash")
        defer { scratch.remove() }
        let store = scratch.path
        let ids = (0..<40).map { "crash-\($0)" }
        let cardData = TestKeys.cardData(code: "00")

        // 1. Load with a slow acquirer (1 s per answer, 8 workers), then SIGKILL mid-flight: half
        // an acquirer's latency after the first answers came (not at a fixed time from the start,
        // which a slow machine may not reach): the client's connections send the payments in waves
        // (6 connections for 40 payments), and the next wave is then waiting on the acquirer.
        let first = try await WorkerProcess.start(store: store, latencyMs: 1000)
        defer { first.kill(SIGKILL) }  // if the test fails before its kill
        let before = try await first.killedMidFlight(ids, cardData: cardData, after: .milliseconds(500))

        // 2. Restart on the same store, with a fast acquirer, and send every payment again.
        let second = try await WorkerProcess.start(store: store, latencyMs: 0)
        defer { second.kill(SIGTERM) }
        var orphans = 0
        for id in ids {
            let (status, body) = try await second.makePayment(id, cardData: cardData)
            #expect(status == 200)
            if let earlier = before[id] {
                #expect(body == earlier, "\(id): a recorded outcome must be answered again unchanged")
            }
            let shown = try await second.show(id)
            #expect(shown["state"] as? String == "completed", "\(id) must have an outcome")
            let sent = shown["authorizationsSent"] as? Int ?? -1
            #expect(sent == 1, "\(id): authorized exactly once across both processes, got \(sent)")
            // Told apart by the record, not by what the client saw: a payment whose outcome was
            // committed and whose answer the kill cut off is no orphan (answered again as recorded).
            let reversals = shown["reversals"] as? [Any] ?? []
            if !reversals.isEmpty {
                // Sent by the dead process, outcome never recorded: reversed and answered 85, not re-sent.
                orphans += 1
                #expect(before[id] == nil, "\(id): an answered payment is not reversed")
                #expect(shown["errorId"] as? Int == 85, "\(id): an orphaned attempt is answered 85")
                #expect(reversals.count == 1 && shown["acquirerAuthorizations"] as? Int == 0, "\(id): reversed once, not sent again")
            }
        }
        // The kill must have hit both answered and in-flight payments, or the test proved nothing.
        #expect(!before.isEmpty, "some payments must have been answered before the kill")
        #expect(orphans > 0, "some payments must have been in flight at the kill")
    }

    /// After a crash Vipps may never call again. The restarted worker reverses, by itself, every
    /// attempt the dead one left in flight (answered 85 to any later call), and sends nothing again.
    @Test func orphansAreReversedAfterARestartWithoutAnyCall() async throws {
        let scratch = try ScratchStore("orphans")
        defer { scratch.remove() }
        let store = scratch.path
        let ids = (0..<16).map { "orphan-\($0)" }
        let cardData = TestKeys.cardData(code: "00")

        // 1. A slow acquirer (6 s per answer, under the 10 s timeout: a payment seen `processing`
        // stays so until the kill, even on a loaded machine), and SIGKILL while payments wait on it.
        // (A connection for each payment and the looks at them, so that none waits behind another.)
        let first = try await WorkerProcess.start(store: store, latencyMs: 6000, connections: 32)
        defer { first.kill(SIGKILL) }
        for id in ids { #expect(try await first.register(id) == 201) }
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for id in ids { group.addTask { _ = try? await first.makePayment(id, cardData: cardData) } }
            }
        }
        // Killed once one is waiting on the acquirer (polled, not a fixed sleep).
        try await waitUntil(within: .seconds(60)) {
            for id in ids where try await first.show(id)["state"] as? String == "processing" { return true }
            return false
        }
        try await first.stop(SIGKILL)
        await load.value
        // 2. Restart (orphaned 1 s + 2 s after an attempt started), and only watch until nothing is
        // processing and every reversal is acknowledged.
        let second = try await WorkerProcess.start(store: store, latencyMs: 0, arguments: ["--acquirer-timeout", "1"])
        defer { second.kill(SIGTERM) }
        // Orphans are told by their record: the restarted worker may sweep them before a first look.
        var inFlight: [String] = []
        var unsettled = Set(ids)
        let deadline = ContinuousClock.now + .seconds(60)
        while !unsettled.isEmpty && ContinuousClock.now < deadline {
            for id in unsettled.sorted() {
                let shown = try await second.show(id)
                let reversals = shown["reversals"] as? [[String: Any]] ?? []
                switch shown["state"] as? String {
                case "pending":
                    unsettled.remove(id)  // never begun before the kill: nothing to undo
                case "completed" where reversals.allSatisfy({ $0["state"] as? String == "acknowledged" }):
                    unsettled.remove(id)
                    guard !reversals.isEmpty else { continue }
                    inFlight.append(id)
                    #expect(shown["errorId"] as? Int == 85, "\(id): an orphaned attempt is answered 85")
                    #expect(reversals.count == 1 && shown["authorizationsSent"] as? Int == 1, "\(id): reversed once, never sent again")
                default:
                    break
                }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(unsettled.isEmpty, "every orphan reversed without a call; left: \(unsettled.sorted())")
        #expect(!inFlight.isEmpty, "some payments must have been in flight at the kill")
        // A later call gets the recorded 85, and nothing is authorized again.
        if let id = inFlight.first {
            let (status, body) = try await second.makePayment(id, cardData: cardData)
            #expect(status == 200 && body.contains(#""errorId":85"#))
            #expect(try await second.show(id)["authorizationsSent"] as? Int == 1)
        }
    }
}

@Suite struct EnvironmentSecretTests {
    /// The admin token and a key passphrase given in the environment are taken out of it once
    /// read: zeroed where the kernel shows the process's environment (/proc/PID/environ, which a
    /// core dump holds too) and unset, so no child inherits them. The key is the encrypted one:
    /// the worker starts only with the right passphrase, from the environment or, given, from the
    /// file, which wins over a wrong one in the environment (taken out all the same). (A worker
    /// process of its own: setenv in the test process would race the tests that spawn processes.)
    @Test(arguments: [false, true]) func secretsAreTakenOutOfTheEnvironment(passphraseFile: Bool) async throws {
        let scratch = try ScratchStore("environ")
        defer { scratch.remove() }
        let file = try #require(Bundle.module.url(forResource: "passphrase", withExtension: "txt", subdirectory: "Fixtures")).path
        let right = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .newlines)
        let inEnvironment = passphraseFile ? "wrong-\(UUID().uuidString)" : right
        let worker = try await WorkerProcess.start(store: scratch.path, latencyMs: 0, privateKey: "psp-private-key-encrypted",
                                                   arguments: passphraseFile ? ["--passphrase-file", file] : [],
                                                   environment: ["PSP_KEY_PASSPHRASE": inEnvironment])
        defer { worker.kill(SIGTERM) }
        // `serve` makes itself non-dumpable, and the kernel then gives its /proc/PID/environ to
        // root: only root can look (run as another user, the rest of the test still runs).
        if geteuid() == 0 {
            let environ = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(worker.process.processIdentifier)/environ"))
            #expect(environ.range(of: Data("PATH=".utf8)) != nil, "the environment is readable (the test can fail)")
            #expect(environ.range(of: Data(LiveWorker.adminToken.utf8)) == nil, "the admin token is zeroed")
            #expect(environ.range(of: Data(inEnvironment.utf8)) == nil, "the passphrase is zeroed")
        }
        #expect(try await worker.register("env-1") == 201, "the worker runs with the token it took")
    }
}

@Suite struct StopSignalTests {
    /// SIGTERM with a drain time: readiness turns 503 at once while makePayments are still
    /// answered; a second SIGTERM ends the drain (60 s, longer than the test waits), and the worker
    /// shuts down and exits 0. (Before, readiness could not say "draining": the server stopped first.)
    @Test func aStopSignalDrainsWhileServingUntilASecondSignal() async throws {
        let scratch = try ScratchStore("drain")
        defer { scratch.remove() }
        let worker = try await WorkerProcess.start(store: scratch.path, latencyMs: 0, arguments: ["--drain-seconds", "60"])
        defer { worker.kill(SIGKILL) }
        #expect(try await worker.request("GET", "/health/ready").0 == 200)
        #expect(try await worker.register("drain-1") == 201)
        Foundation.kill(worker.process.processIdentifier, SIGTERM)
        try await waitUntil(within: .seconds(10)) { try await worker.request("GET", "/health/ready") == (503, #"{"status":"DOWN","queue":"draining"}"#) }
        let (status, body) = try await worker.makePayment("drain-1", cardData: TestKeys.cardData(code: "00"))
        #expect(status == 200 && body.contains(#""status":"OK""#), "\(status) \(body)")
        #expect(worker.process.isRunning, "still serving while it drains")
        Foundation.kill(worker.process.processIdentifier, SIGTERM)
        try await waitUntil(within: .seconds(30)) { !worker.process.isRunning }
        #expect(worker.process.terminationReason == .exit && worker.process.terminationStatus == 0)
    }

    /// Without a drain time a stop signal shuts the worker down at once, and it exits 0.
    @Test func withoutADrainTimeAStopSignalShutsDownAtOnce() async throws {
        let scratch = try ScratchStore("nodrain")
        defer { scratch.remove() }
        let worker = try await WorkerProcess.start(store: scratch.path, latencyMs: 0)
        defer { worker.kill(SIGKILL) }
        #expect(try await worker.register("nodrain-1") == 201)
        Foundation.kill(worker.process.processIdentifier, SIGTERM)
        try await waitUntil(within: .seconds(30)) { !worker.process.isRunning }
        #expect(worker.process.terminationReason == .exit && worker.process.terminationStatus == 0)
    }
}

@Suite struct CommandLineTests {
    /// Values that would pass a type check and then misbehave are refused before anything starts.
    @Test(arguments: [
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--make-payment-path", "/payments"], "--make-payment-path"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--make-payment-path", "metrics/x"], "--make-payment-path"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--acquirer-timeout", "0.0004"], "--acquirer-timeout"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--drain-seconds", "301"], "--drain-seconds"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--workers", "1", "--event-loop-threads", "2"], "--workers"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--port", "70000"], "--port"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--worker-threads", "pool", "--event-loop-threads", "100000"], "--event-loop-threads"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--max-connections", "0"], "--max-connections"),
        // Card numbers do not cross a network in clear unless the operator says the link is private.
        (["serve", "--private-key", "k.pem", "--acquirer", "http://acq.example.net:8090"], "--allow-cleartext-acquirer"),
        (["serve", "--private-key", "k.pem", "--acquirer", "iso8583://10.1.2.3:8583"], "--allow-cleartext-acquirer"),
        // The worker never picks a key itself (it used to fall back to the repository's test key).
        (["serve", "--acquirer", "simulator", "--port", "0"], "--private-key"),
        // Nor an acquirer: the simulator, once the default, approves with nothing authorized.
        (["serve", "--private-key", "k.pem", "--port", "0"], "--acquirer"),
        (["keygen", "--bits", "99999999999"], "--bits"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--simulator-latency-ms", "70000"], "--simulator-latency-ms"),
        (["serve", "--acquirer", "https://acq.example.net", "--private-key", "k.pem", "--simulator-latency-ms", "20"], "--simulator-latency-ms"),
        (["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--log-level", "verbose"], "--log-level"),
    ])
    func badValuesAreRefused(arguments: [String], named: String) async throws {
        let (status, message) = try await Self.run(arguments)
        #expect(status != 0)
        #expect(message.contains(named), "\(message)")
    }

    /// A service that fails at start (its port is taken) ends the process with an error. The worker
    /// pool used to wait on its queue through the cancellation, and the process never exited.
    @Test func aTakenPortEndsTheProcess() async throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, $0, &length) == 0 }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let store = FileManager.default.temporaryDirectory.appendingPathComponent("taken-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm", "-gate"] { try? FileManager.default.removeItem(atPath: store + suffix) } }
        let process = Process()
        process.executableURL = WorkerProcess.binary
        process.arguments = ["serve", "--host", "127.0.0.1", "--port", String(port), "--store", "sqlite:" + store,
                             "--private-key", TestKeys.path("psp-private-key"), "--acquirer", "simulator"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let limit = Date().addingTimeInterval(30)
        while process.isRunning && Date() < limit { try await Task.sleep(for: .milliseconds(50)) }
        let exited = !process.isRunning
        if !exited { process.interrupt(); kill(process.processIdentifier, SIGKILL) }
        // Polled, not `waitUntilExit` (which spins on the thread it holds until Foundation sees the exit).
        while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        #expect(exited, "still running 30 s after its port was found taken")
        #expect(!exited || process.terminationStatus != 0)
    }

    /// A new private key is never left beside an old public key (a pair that does not match),
    /// nor without one.
    @Test func keygenNeverLeavesHalfAPair() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keygen-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "an old public key".write(toFile: directory + "/public-key.pem", atomically: true, encoding: .utf8)
        let (status, message) = try await Self.run(["keygen", "--out", directory])
        #expect(status != 0 && message.contains("public-key.pem"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/private-key.pem"))
        #expect(try String(contentsOfFile: directory + "/public-key.pem", encoding: .utf8) == "an old public key")
    }

    /// acquirer-sim refuses what it would misread: a port past 65535 (the resolver takes it modulo
    /// 65536: 70000 listened on 4464), negative fault values (quietly "off"), and a journal it
    /// cannot write (the scripts' checks read it; it ran on without a word).
    @Test(arguments: [
        (["--iso-port", "70000"], "--iso-port"),
        (["--http-port", "65536"], "--http-port"),
        (["--delay-ms", "-5"], "--delay-ms"),
        (["--drop-every", "-1"], "--drop-every"),
        (["--iso-port", "0", "--http-port", "0", "--journal", "/nonexistent-\(UUID().uuidString)/journal.json"], "cannot write the journal"),
    ] as [([String], String)])
    func acquirerSimRefusesWhatItWouldMisread(arguments: [String], named: String) async throws {
        let binary = WorkerProcess.binary.deletingLastPathComponent().appendingPathComponent("acquirer-sim")
        let (status, message) = try await Self.run(arguments, binary: binary)
        #expect(status != 0 && message.contains(named), "\(status): \(message)")
    }

    /// vipps-sim takes the admin token from a file or the environment, never as an argument (which
    /// any user of the machine reads in ps), and refuses a client of no threads (it ran on one).
    @Test(arguments: [
        (["--admin-token", "s3cret"], "--admin-token"),
        (["--admin-token-file", "/nonexistent-\(UUID().uuidString)"], "--admin-token-file"),
        (["--client-threads", "0"], "--client-threads"),
    ] as [([String], String)])
    func vippsSimRefusesWhatItWouldMisread(arguments: [String], named: String) async throws {
        let binary = WorkerProcess.binary.deletingLastPathComponent().appendingPathComponent("vipps-sim")
        let (status, message) = try await Self.run(["--url", "http://127.0.0.1:1", "--count", "1"] + arguments, binary: binary)
        #expect(status != 0 && message.contains(named), "\(status): \(message)")
    }

    /// `--out` may name folders that do not exist yet: its own is made 0700 (those above as
    /// `mkdir -p` makes them), and the pair lands with no temporary file left beside it.
    @Test func keygenMakesTheFoldersItNeeds() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("keygen-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let directory = base + "/a/b"
        let (status, message) = try await Self.run(["keygen", "--out", directory])
        #expect(status == 0, "\(message)")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(files == ["private-key.pem", "public-key.pem"])
        func mode(_ path: String) throws -> Int { (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1 }
        #expect(try mode(directory + "/private-key.pem") == 0o600)
        // The key's folder 0700; those above it as `mkdir -p` makes them, open to their owner at least.
        #expect(try mode(directory) == 0o700)
        #expect(try mode(base) & 0o700 == 0o700 && mode(base + "/a") & 0o700 == 0o700)
        // A file where the folder should be is refused by name.
        let (refused, why) = try await Self.run(["keygen", "--out", directory + "/private-key.pem"])
        #expect(refused != 0 && why.contains("is not a folder"), "\(why)")
    }

    /// A run killed before it linked its files leaves them under temporary names (never under the
    /// key's); the next run removes them and makes the pair.
    @Test func keygenRemovesWhatAKilledRunLeft() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keygen-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "left by a killed run".write(toFile: directory + "/private-key.pem.partial-0123456789ab", atomically: false, encoding: .utf8)
        try "someone else's".write(toFile: directory + "/notes.txt", atomically: false, encoding: .utf8)
        let (status, message) = try await Self.run(["keygen", "--out", directory])
        #expect(status == 0, "\(message)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == ["notes.txt", "private-key.pem", "public-key.pem"])
    }

    /// A passphrase variable set but empty (a secret store's lookup that found nothing) is said to
    /// be empty: taken for unset, the worker told the operator to set the variable that was set.
    @Test func anEmptyPassphraseInTheEnvironmentIsSaidToBe() async throws {
        let scratch = try ScratchStore("emptypass")
        defer { scratch.remove() }
        let key = try #require(Bundle.module.url(forResource: "psp-private-key-encrypted", withExtension: "pem", subdirectory: "Fixtures")).path
        var environment = ProcessInfo.processInfo.environment
        environment["PSP_KEY_PASSPHRASE"] = ""
        let (status, message) = try await Self.run(["serve", "--acquirer", "simulator", "--private-key", key, "--port", "0",
                                                    "--host", "127.0.0.1", "--store", "sqlite:" + scratch.path], environment: environment)
        #expect(status != 0)
        #expect(message.contains("PSP_KEY_PASSPHRASE is empty"), "\(message)")
    }

    /// Without `--workers`, the worker takes one per event loop at least: NIO's loop count follows
    /// a CPU quota or NIO_SINGLETON_GROUP_LOOP_COUNT and may pass the cores online, and the check
    /// that a loop has a worker must not refuse the defaults.
    @Test func theDefaultWorkersCoverEveryEventLoop() async throws {
        let scratch = try ScratchStore("loops")
        defer { scratch.remove() }
        let loops = ProcessInfo.processInfo.activeProcessorCount + 2
        let worker = try await WorkerProcess.start(store: scratch.path, latencyMs: 0, workers: nil,
                                                   environment: ["NIO_SINGLETON_GROUP_LOOP_COUNT": String(loops)])
        defer { worker.kill(SIGTERM) }
        #expect(try await worker.register("loops-1") == 201)
    }

    /// Runs `psp-worker` to its end, from a thread of its own (it blocks until the process exits);
    /// its exit status and what it wrote to standard error.
    static func run(_ arguments: [String], environment: [String: String]? = nil, binary: URL = WorkerProcess.binary) async throws -> (Int32, String) {
        try await RawHTTP.offThePool { try runBlocking(arguments, environment: environment, binary: binary) }
    }

    private static func runBlocking(_ arguments: [String], environment: [String: String]?, binary: URL) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        if let environment { process.environment = environment }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // A command that should have stopped and did not (a bad value taken, a port listened on)
        // fails its test instead of holding it for ever.
        let overdue = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: overdue)
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        while process.isRunning { usleep(10_000) }  // this thread's own; `waitUntilExit` would spin it
        overdue.cancel()
        return (process.terminationStatus, message)
    }

    /// PSP_ADMIN_TOKEN set but empty is a mistake to refuse, not "no admin endpoints". In a child
    /// process: setenv in this one would race the tests that read the environment.
    @Test func anEmptyAdminTokenIsRefused() async throws {
        var environment = ProcessInfo.processInfo.environment
        environment["PSP_ADMIN_TOKEN"] = ""
        let (status, message) = try await Self.run(["serve", "--acquirer", "simulator", "--private-key", "k.pem", "--port", "0"], environment: environment)
        #expect(status != 0)
        #expect(message.contains("PSP_ADMIN_TOKEN"), "\(message)")
    }

    @Test(arguments: [("http://127.0.0.1:8090", false), ("https://acq.example.net", false), ("iso8583://localhost:8583", false),
                      ("http://[::1]:8090/x", false), ("http://acq.example.net:8090", true), ("iso8583://10.1.2.3:8583?terminal=VIPPS002", true),
                      ("iso8583://127.acq.example.net:8583", true), ("http://127.0.0.2:8090", false)])
    func cleartextOffThisMachineIsNamed(url: String, inClear: Bool) throws {
        #expect(try #require(PSPWorkerConfiguration.AcquirerChoice(url)).sendsCardDataInClearOffThisMachine == inClear)
    }

    /// The open-file limit is raised for the HTTP acquirer's pool too, not only for the
    /// connections served (the pool's sockets past the limit failed with EMFILE: 85 and a reversal).
    @Test(arguments: [("simulator", 0), ("iso8583://127.0.0.1:8583", 0), ("https://acq.example.net", 256),
                      ("https://acq.example.net/api?connections=1000", 1000)])
    func theOpenFileLimitCoversTheAcquirersPool(acquirer: String, pool: Int) throws {
        var configuration = PSPWorkerConfiguration(keys: KeyRingSource(privateKeyPath: "k.pem"))
        configuration.maxConnections = 500
        configuration.acquirer = try #require(PSPWorkerConfiguration.AcquirerChoice(acquirer))
        #expect(OpenFileLimit.needed(by: configuration) == 500 + pool + OpenFileLimit.reserve)
    }

    /// A running worker cannot leave a core dump: one would hold the private key and the card
    /// numbers in flight.
    @Test func aRunningWorkerHasCoreDumpsOff() async throws {
        let store = FileManager.default.temporaryDirectory.appendingPathComponent("core-\(UUID().uuidString).sqlite").path
        let worker = try await WorkerProcess.start(store: store, latencyMs: 0)
        defer { worker.kill(SIGTERM); for suffix in ["", "-wal", "-shm", "-gate"] { try? FileManager.default.removeItem(atPath: store + suffix) } }
        let limits = try String(contentsOfFile: "/proc/\(worker.process.processIdentifier)/limits", encoding: .utf8)
        let core = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") })
        #expect(core.split(separator: " ", omittingEmptySubsequences: true).dropFirst(4).prefix(2) == ["0", "0"], "\(core)")
    }
}

