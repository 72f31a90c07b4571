import Foundation
import PaymentStoreConformance
import Processing
import SQLitePaymentStore
import Synchronization
import Testing

/// Each check gets its own database file; `reopen` opens that file again as a restart would.
final class TemporaryDatabase: Sendable {
    let path: String
    private let stores = Mutex<[SQLitePaymentStore]>([])

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString).sqlite").path
    }

    func open() throws -> SQLitePaymentStore {
        let store = try SQLitePaymentStore(path: path)
        stores.withLock { $0.append(store) }
        return store
    }

    deinit {
        stores.withLock { $0.forEach { $0.close() } }
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}

@Suite struct SQLitePaymentStoreTests {
    @Test(arguments: PaymentStoreConformance.checks)
    func conformance(_ check: PaymentStoreConformance.Check) async throws {
        let database = TemporaryDatabase()
        let suite = PaymentStoreConformance(
            makeStore: { try database.open() },
            reopenStore: {
                // A restart: close what is open, then open the same file.
                try database.open()
            })
        try await check.run(suite)
    }

    @Test func usesWriteAheadLogging() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        _ = try await store.register(PaymentStoreConformance.registration("p1"), now: 1)
        #expect(FileManager.default.fileExists(atPath: database.path + "-wal"))
    }

    @Test func manyConcurrentWritesAllCommit() async throws {
        let database = TemporaryDatabase()
        let store = try database.open()
        let created = try await withThrowingTaskGroup(of: RegisterResult.self) { group in
            for i in 0..<500 { group.addTask { try await store.register(PaymentStoreConformance.registration("p\(i)"), now: 1) } }
            return try await group.reduce(0) { $0 + ($1 == .created ? 1 : 0) }
        }
        #expect(created == 500)
        store.close()
        let reopened = try database.open()
        for i in [0, 250, 499] { #expect(try await reopened.payment("p\(i)") != nil) }
    }

    @Test func unwritablePathIsAClearError() {
        #expect(throws: SQLiteError.self) { _ = try SQLitePaymentStore(path: "/nonexistent-dir/x/store.sqlite") }
    }
}
