import AcquirerSimulator
import ArgumentParser
import Foundation
import Logging
import Synchronization

/// `acquirer-sim`: an acquirer host for tests and load tests. It speaks ISO 8583 over TCP (2-byte
/// length, ISO87A) and the HTTP JSON API of `HTTPAcquirer`, and answers by the simulator's test cards, with faults injected from flags. It
/// keeps a journal of every authorization and reversal (by RRN) and writes it as JSON.
@main
struct AcquirerSimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acquirer-sim",
        abstract: "A simulated acquirer host (ISO 8583 over TCP, and HTTP JSON) answering by test card, with fault injection."
    )

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "ISO 8583 port (0: any free port, printed).") var isoPort = 8583
    @Option(help: "HTTP JSON port (0: any free port, printed).") var httpPort = 8090
    @Flag(help: "Run no HTTP side.") var noHTTP = false
    @Option(help: "Delay before every reply, in milliseconds.") var delayMs = 0
    @Option(help: "Random extra delay up to this, in milliseconds.") var jitterMs = 0
    @Option(help: "Share of authorization replies dropped (0 to 1).") var dropRate = 0.0
    @Option(help: "Drop every Nth authorization reply (0: none).") var dropEvery = 0
    @Flag(help: "ISO 8583 only: hold each authorization reply until its reversal arrives, then send it (a late reply).") var lateReplies = false
    @Flag(help: "ISO 8583 only: send every reply twice.") var duplicateReplies = false
    @Option(help: "ISO 8583 only: close a connection, unanswered, at its Nth message (0: never).") var resetAfter = 0
    @Option(help: "Write the journal (authorizations and reversals by RRN) as JSON to this file, every second and at exit.")
    var journal: String?

    func validate() throws {
        guard (0...1).contains(dropRate) else { throw ValidationError("--drop-rate must be between 0 and 1") }
        // Past 65535 the resolver would take the port modulo 65536 (70000 listens on 4464).
        guard (0...65535).contains(isoPort), (0...65535).contains(httpPort) else {
            throw ValidationError("--iso-port and --http-port must be between 0 and 65535")
        }
        // Negative values would quietly mean "off"; an hour is more than any test waits.
        guard (0...3_600_000).contains(delayMs), (0...3_600_000).contains(jitterMs) else {
            throw ValidationError("--delay-ms and --jitter-ms must be between 0 and 3,600,000")
        }
        guard dropEvery >= 0, resetAfter >= 0 else { throw ValidationError("--drop-every and --reset-after must be 0 or more") }
    }

    func run() async throws {
        var faults = AcquirerFaults()
        faults.delay = .milliseconds(delayMs)
        faults.jitter = .milliseconds(jitterMs)
        faults.dropRate = dropRate
        faults.dropEvery = dropEvery
        faults.lateReplies = lateReplies
        faults.duplicateReplies = duplicateReplies
        faults.resetAfter = resetAfter
        let acquirer = AcquirerHost(faults: faults)

        let journalPath = journal
        // A journal that cannot be written is said, not silently missing: the scripts' checks read it.
        final class Failures: Sendable { let count = Mutex(0) }
        let failedWrites = Failures()
        let write: @Sendable () -> Bool = {
            guard let journalPath else { return true }
            do {
                try acquirer.journal.json().write(to: URL(fileURLWithPath: journalPath), options: .atomic)
                return true
            } catch {
                if failedWrites.count.withLock({ $0 += 1; return $0 == 1 }) {
                    FileHandle.standardError.write(Data("acquirer-sim: cannot write the journal to \(journalPath): \(error)\n".utf8))
                }
                return false
            }
        }
        // Written once before listening: a path that cannot be written ends the run at once.
        guard write() else { throw ExitCode(1) }
        let iso = ISO8583Host(host: acquirer)
        let port = try await iso.start(address: host, port: isoPort)
        print("acquirer-sim: ISO 8583 listening on \(host):\(port)")
        var http: HTTPHost.Running?
        if !noHTTP {
            http = try await HTTPHost.start(host: acquirer, address: host, port: httpPort)
            print("acquirer-sim: HTTP JSON listening on \(host):\(http!.port)")
        }
        fflush(nil)  // scripts wait for this line
        let finished = AsyncStream<Int32>.makeStream()
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig)
            source.setEventHandler { finished.continuation.yield(sig) }
            source.resume()
            sources.append(source)
        }
        let writer = Task {
            while !Task.isCancelled {
                _ = write()
                try? await Task.sleep(for: .seconds(1))
            }
        }
        for await _ in finished.stream { break }
        writer.cancel()
        _ = write()
        let j = acquirer.journal
        print("acquirer-sim: \(j.totalAuthorizations) authorizations, \(j.totalReversals) reversals (+\(j.repeats) repeats), "
              + "\(j.dropped) replies dropped, \(j.lateSent) late; authorized twice: \(j.authorizedTwice.count), reversed twice: \(j.reversedTwice.count)")
        await iso.stop()
        http?.task.cancel()
        _ = sources
    }
}
