import Foundation
import Testing

/// `acquirer-sim` as a real process, ISO 8583 on a port of its choosing, its journal (what it
/// authorized and reversed, by RRN) in a file: the acquirer's side of a test that kills the worker.
final class AcquirerSimProcess: @unchecked Sendable {
    // @unchecked: the Process is only touched from the test's own task.
    let process = Process()
    let isoPort: Int
    let journalPath: String

    struct DidNotStart: Error { let log: String }

    /// What the acquirer saw, from its journal.
    struct Journal {
        var authorizations: [String: Int]
        var reversals: [String: Int]
        var authorizedTwice: [String]
        var reversedTwice: [String]
    }

    private init(arguments: [String], journalPath: String) throws {
        self.journalPath = journalPath
        process.executableURL = WorkerProcess.binary.deletingLastPathComponent().appendingPathComponent("acquirer-sim")
        process.arguments = ["--iso-port", "0", "--no-http", "--journal", journalPath] + arguments
        let (found, seen) = try WorkerProcess.run(process, readingPortAfter: "ISO 8583 listening on")
        guard let found else { process.terminate(); throw DidNotStart(log: seen) }
        isoPort = found
    }

    /// Started from a thread of its own: the start blocks on the process's output.
    static func start(arguments: [String], journalPath: String) async throws -> AcquirerSimProcess {
        try await RawHTTP.offThePool { try AcquirerSimProcess(arguments: arguments, journalPath: journalPath) }
    }

    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    /// Stops it (SIGTERM: it writes its journal a last time) and reads the journal.
    func stop() async throws -> Journal {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGTERM) }
        try await waitUntil(within: .seconds(20)) { !self.process.isRunning }
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: journalPath))) as? [String: Any] ?? [:]
        return Journal(authorizations: object["authorizations"] as? [String: Int] ?? [:],
                       reversals: object["reversals"] as? [String: Int] ?? [:],
                       authorizedTwice: object["authorizedTwice"] as? [String] ?? ["(unreadable journal)"],
                       reversedTwice: object["reversedTwice"] as? [String] ?? ["(unreadable journal)"])
    }
}

@Suite struct AcquirerCrashTests {
    /// SIGKILL while authorizations are out at a real acquirer (acquirer-sim over ISO 8583, its
    /// replies spread over 0.3 to 3.3 s), then a restart on the same store, and no call from
    /// Vipps after. Counted by the acquirer, not by the worker's own records: no RRN authorized or
    /// reversed twice, every authorization it approved either answered OK or reversed, and none
    /// answered OK reversed. (The crash tests with the simulator inside the worker lose the
    /// acquirer's side with the process.)
    @Test func aCrashLeavesNoApprovalStandingAtTheAcquirer() async throws {
        let scratch = try ScratchStore("acquirer-crash")
        defer { scratch.remove() }
        let host = try await AcquirerSimProcess.start(arguments: ["--delay-ms", "300", "--jitter-ms", "3000"],
                                                      journalPath: scratch.directory.appendingPathComponent("journal.json").path)
        defer { host.kill() }
        let acquirer = ["--acquirer", "iso8583://127.0.0.1:\(host.isoPort)", "--allow-cleartext-acquirer"]
        let ids = (0..<24).map { "acq-crash-\($0)" }
        let cardData = TestKeys.cardData(code: "00")

        // 1. Every payment at once (a connection each), killed once the first answers are in.
        let first = try await WorkerProcess.start(store: scratch.path, latencyMs: 0, arguments: acquirer + ["--acquirer-timeout", "6"],
                                                  connections: ids.count)
        defer { first.kill(SIGKILL) }
        let before = try await first.killedMidFlight(ids, cardData: cardData, after: .milliseconds(300))

        // 2. Restarted, and only watched: the dead process's attempts are orphaned 6 s + 2 s after
        // they began, reversed by the sweep, and each reversal acknowledged.
        let second = try await WorkerProcess.start(store: scratch.path, latencyMs: 0, arguments: acquirer + ["--acquirer-timeout", "6"])
        defer { second.kill(SIGTERM) }
        var settled: [String: [String: Any]] = [:]
        let deadline = ContinuousClock.now + .seconds(90)
        while settled.count < ids.count && ContinuousClock.now < deadline {
            for id in ids where settled[id] == nil {
                let shown = try await second.show(id)
                let reversals = shown["reversals"] as? [[String: Any]] ?? []
                switch shown["state"] as? String {
                case "pending": settled[id] = shown  // never begun before the kill
                case "completed" where reversals.allSatisfy({ $0["state"] as? String == "acknowledged" }): settled[id] = shown
                default: break
                }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(settled.count == ids.count, "left unsettled: \(Set(ids).subtracting(settled.keys).sorted())")
        try await second.stop(SIGTERM)
        let journal = try await host.stop()

        // 3. The acquirer's account against the worker's.
        #expect(journal.authorizedTwice.isEmpty, "authorized twice: \(journal.authorizedTwice)")
        #expect(journal.reversedTwice.isEmpty, "reversed twice: \(journal.reversedTwice)")
        var answeredOK = Set<String>(), orphans = 0
        for (id, shown) in settled {
            let reversals = shown["reversals"] as? [[String: Any]] ?? []
            if shown["status"] as? String == "OK" {
                #expect(reversals.isEmpty, "\(id): answered OK and reversed")
                if let rrn = shown["acquirerReference"] as? String { answeredOK.insert(rrn) } else { Issue.record("\(id): OK without its RRN") }
            } else if !reversals.isEmpty {
                orphans += 1
                #expect(before[id] == nil, "\(id): an answered payment is not reversed")
                #expect(shown["errorId"] as? Int == 85 && reversals.count == 1, "\(id): an orphan is answered 85 and reversed once")
            }
            #expect((shown["authorizationsSent"] as? Int ?? 0) <= 1, "\(id): sent more than once")
        }
        let standing = Set(journal.authorizations.keys).subtracting(answeredOK).subtracting(journal.reversals.keys)
        #expect(standing.isEmpty, "approved at the acquirer, neither answered OK nor reversed: \(standing.sorted())")
        #expect(answeredOK.isDisjoint(with: journal.reversals.keys), "a payment answered OK was reversed at the acquirer")
        #expect(answeredOK.isSubset(of: journal.authorizations.keys), "an OK the acquirer never authorized")
        // The kill must have cut between answered and in-flight payments, or this proved nothing.
        #expect(!before.isEmpty, "some payments must have been answered before the kill")
        #expect(orphans > 0, "some payments must have been in flight at the kill")
    }
}
