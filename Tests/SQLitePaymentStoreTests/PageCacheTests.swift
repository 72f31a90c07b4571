@testable import SQLitePaymentStore
import Testing

/// SQLite's page cache as changed here (Sources/CSQLite/README.md: its largest key is put back once
/// a page leaves the lock page's number, where `balance_nonroot()` parks it during a split).
@Suite struct PageCacheTests {
    /// B-tree splits in many transactions, half of them rolled back, through a small cache so that
    /// pages come and go, in WAL mode and with a rollback journal: the file stays sound and holds
    /// exactly the committed rows. (A smoke test of the changed code under splits: a largest key set
    /// too low on purpose, 1, still passed it, since SQLite drops a rolled-back transaction's pages
    /// by other means too; that the bounds stay bounds rests on the reasoning in the README.)
    @Test(arguments: ["wal", "delete"]) func splitsAndRollbacksLeaveASoundFile(journalMode: String) throws {
        let database = TemporaryDatabase()
        let db = try SQLiteConnection(path: database.path, readOnly: false)
        _ = try db.run("PRAGMA journal_mode=\(journalMode)")
        try db.execute("PRAGMA cache_size=32")
        try db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        // Random keys land all over the tree: splits everywhere, and new pages at the file's end.
        let insert = """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
            INSERT INTO t SELECT randomblob(16), randomblob(180 + abs(random() % 200)) FROM n
            """
        var committed = 0
        for round in 0..<40 {
            try db.execute("BEGIN")
            try db.execute(insert)
            if round % 2 == 0 {
                try db.execute("COMMIT")
                committed += 300
            } else {
                try db.execute("ROLLBACK")
            }
        }
        var count = 0
        _ = try db.run("SELECT count(*) FROM t") { count = Int($0.int(0)) }
        #expect(count == committed)
        #expect(try SQLitePaymentStoreSchemaTests.integrityCheck(db) == ["ok"])
    }
}
