import AcquirerSimulator
import ArgumentParser
import Foundation
import Logging

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
        let iso = ISO8583Host(host: acquirer)
        let port = try await iso.start(address: host, port: isoPort)
        print("acquirer-sim: ISO 8583 listening on \(host):\(port)")
        var http: HTTPHost.Running?
        if !noHTTP {
            http = try await HTTPHost.start(host: acquirer, address: host, port: httpPort)
            print("acquirer-sim: HTTP JSON listening on \(host):\(http!.port)")
        }
        fflush(nil)  // scripts wait for this line

        let journalPath = journal
        let write: @Sendable () -> Void = {
            guard let journalPath else { return }
            try? acquirer.journal.json().write(to: URL(fileURLWithPath: journalPath), options: .atomic)
        }
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
                write()
                try? await Task.sleep(for: .seconds(1))
            }
        }
        for await _ in finished.stream { break }
        writer.cancel()
        write()
        let j = acquirer.journal
        print("acquirer-sim: \(j.totalAuthorizations) authorizations, \(j.totalReversals) reversals (+\(j.repeats) repeats), "
              + "\(j.dropped) replies dropped, \(j.lateSent) late; authorized twice: \(j.authorizedTwice.count), reversed twice: \(j.reversedTwice.count)")
        await iso.stop()
        http?.task.cancel()
        _ = sources
    }
}
