import Logging
import ServiceLifecycle
import Synchronization
import Testing
@testable import PSPWorker

final class Events: Sendable {
    let list = Mutex<[String]>([])
    func add(_ event: String) { list.withLock { $0.append(event) } }
    var all: [String] { list.withLock { $0 } }
}

@Suite struct ServiceShutdownTests {
    /// A service that writes to the store and, when stopped, still has a write to finish (as the
    /// workers draining the queue, or a reversal send being recorded, do).
    struct FinishingWriter: WritesToStore {
        let writers: StoreWriters
        let events: Events
        func run() async throws {
            defer { writers.finished() }
            try? await gracefulShutdown()  // ends at a graceful shutdown or a cancellation
            try? await Task.sleep(for: .milliseconds(200))
            events.add("last write")
        }
    }

    /// However the group stops (gracefully, or cancelled because another service failed), the
    /// store is closed only after every service that writes to it has returned, and after the
    /// writes begun since (a late approval's reopen).
    @Test(arguments: [false, true]) func theStoreClosesAfterItsWriters(cancelled: Bool) async throws {
        let events = Events()
        let writers = StoreWriters()
        let services: [any Service] = [
            StoreCloser(writers: writers, lastWrites: {
                try? await Task.sleep(for: .milliseconds(100))
                events.add("late reopen")
            }, close: { events.add("closed") }),
            FinishingWriter(writers: writers, events: events), FinishingWriter(writers: writers, events: events),
        ]
        writers.expect(services.count { $0 is any WritesToStore })
        #expect(services.count { $0 is any WritesToStore } == 2)
        let group = ServiceGroup(configuration: .init(services: services, logger: Logger(label: "test")))
        let running = Task { try await group.run() }
        try await Task.sleep(for: .milliseconds(100))
        if cancelled { running.cancel() } else { await group.triggerGracefulShutdown() }
        try? await running.value
        #expect(events.all == ["last write", "last write", "late reopen", "closed"])
    }
}
