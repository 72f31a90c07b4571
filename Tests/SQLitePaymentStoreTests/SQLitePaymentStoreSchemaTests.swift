import Foundation
import MakePayment
import PaymentStoreConformance
import Processing
@testable import SQLitePaymentStore
import Testing

/// The state checks cost nothing per write, and a store made with the older checks gets them.
@Suite struct SQLitePaymentStoreSchemaTests {
    /// Every statement that writes a payment's or a reversal's state.
    static let writes = [
        SQLitePaymentStore.registerSQL, SQLitePaymentStore.beginAttemptSQL, SQLitePaymentStore.recordOutcomeSQL,
        SQLitePaymentStore.cancelSQL, SQLitePaymentStore.insertReversalSQL, SQLitePaymentStore.reversalTrySQL,
    ]

    /// The statements of `writes` whose program builds a throw-away table (`OpenEphemeral`) each time it runs.
    static func statementsBuildingThrowAwayTables(_ db: SQLiteConnection) throws -> [String] {
        try writes.filter { sql in
            var opcodes: [String] = []
            try db.run("EXPLAIN " + sql) { opcodes.append($0.text(1)) }
            #expect(!opcodes.isEmpty)
            return opcodes.contains("OpenEphemeral")
        }
    }

    /// The schema as stores made before the seventeenth session have it (`IN` lists in the checks).
    static var olderSchema: String {
        SQLitePaymentStore.stateCheckRewrites.reduce(SQLitePaymentStore.schema) { $0.replacing($1.1, with: $1.0) }
    }

    static func tableSQL(_ db: SQLiteConnection) throws -> [String] {
        var sql: [String] = []
        try db.run("SELECT sql FROM sqlite_schema WHERE type = 'table' ORDER BY name") { sql.append($0.text(0)) }
        return sql
    }

    @Test func noWriteBuildsAThrowAwayTable() async throws {
        let database = TemporaryDatabase()
        _ = try database.open()
        let db = try SQLiteConnection(path: database.path, readOnly: true)
        #expect(try Self.statementsBuildingThrowAwayTables(db) == [])
    }

    @Test func aStoreWithTheOlderChecksGetsTheNewOnesAndKeepsItsRows() async throws {
        let database = TemporaryDatabase()
        do {
            let old = try SQLiteConnection(path: database.path, readOnly: false)
            try old.execute("PRAGMA journal_mode=WAL")
            try old.execute(Self.olderSchema)
            try old.execute("""
                INSERT INTO payments (psp_transaction_id, merchant_serial_number, merchant_order_id, amount, currency,
                    token_hash, payment_text, state, created_at, updated_at)
                VALUES ('p-old', '123456', 'o-1', 100, 'NOK', x'00', 'text', 'pending', 1, 1)
                """)
            // What the rewrite is for: with the older checks, the state writes build a throw-away table.
            #expect(try Self.statementsBuildingThrowAwayTables(old) == Self.writes)
            #expect(try Self.tableSQL(old).allSatisfy { $0.contains("state IN (") })
        }

        let store = try database.open()
        let db = try SQLiteConnection(path: database.path, readOnly: false)
        #expect(try Self.statementsBuildingThrowAwayTables(db) == [])
        let tables = try Self.tableSQL(db)
        #expect(tables.count == 2)
        #expect(tables.allSatisfy { !$0.contains("state IN (") && $0.contains("CHECK (state = 'pending' OR ") })

        // The row is there, and the store goes on with it.
        let before = try #require(try await store.payment("p-old"))
        #expect(before.state == .pending && before.registration.amount == 100)
        let attempt = AttemptRecord(attemptId: "a-1", attemptReference: "000001", instanceId: "test",
                                    maskedPAN: try #require(MaskedPAN(masked: "400000******0002")), startedAt: 2)
        #expect(try await store.beginAttempt("p-old", attempt: attempt, now: 2) == .begun)
        #expect(try await store.payment("p-old")?.state == .processing)

        // The checks still refuse what they refused.
        #expect(throws: SQLiteError.self) {
            try db.run("UPDATE payments SET state = 'settled' WHERE psp_transaction_id = 'p-old'")
        }
        #expect(throws: SQLiteError.self) {
            try db.run("""
                INSERT INTO reversals (reversal_id, psp_transaction_id, attempt_id, attempt_reference, amount, currency,
                    merchant_serial_number, reason, state, tries, next_try_at, created_at, updated_at)
                VALUES ('r-1', 'p-old', 'a-1', '000001', 100, 'NOK', '123456', 'test', 'lost', 0, 1, 1, 1)
                """)
        }
        var check: [String] = []
        try db.run("PRAGMA integrity_check") { check.append($0.text(0)) }
        #expect(check == ["ok"])

        // Opening it again changes nothing more.
        var version: Int64 = -1, again: Int64 = -2
        try db.run("PRAGMA schema_version") { version = $0.int(0) }
        database.closeAll()
        _ = try database.open()
        try db.run("PRAGMA schema_version") { again = $0.int(0) }
        #expect(version == again)
    }
}
