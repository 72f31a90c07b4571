import CSQLite

public struct SQLiteError: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public var description: String { "SQLite error \(code): \(message)" }

    /// `error` itself if it is one, else one of code -1 that describes it (a write's own error).
    static func wrapping(_ error: any Error) -> SQLiteError {
        error as? SQLiteError ?? SQLiteError(code: -1, message: "\(error)")
    }
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection with prepared statements cached by SQL text.
final class SQLiteConnection: @unchecked Sendable {
    // @unchecked: a connection is used by one thread at a time: the writer lane's thread, or the
    // one caller that took it from the reader pool.
    let handle: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    init(path: String, readOnly: Bool) throws {
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: "\(path): \(message)")
        }
        // SQLite falls back to read-only on a file it may not write, without an error: a store that
        // refuses every write later (each payment answered 91) must refuse to open instead.
        if !readOnly && sqlite3_db_readonly(db, "main") == 1 {
            sqlite3_close_v2(db)
            throw SQLiteError(code: SQLITE_READONLY, message: "\(path): the file is not writable")
        }
        handle = db
        sqlite3_busy_timeout(db, 5_000)
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
    }

    /// A transaction is open (BEGIN without its COMMIT or ROLLBACK yet).
    var inTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    func error(_ rc: Int32) -> SQLiteError { SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle))) }

    func execute(_ sql: String) throws {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    /// Runs `sql` with `bindings`, handing each row to `row`. Returns the number of rows changed.
    @discardableResult
    func run(_ sql: String, _ bindings: [SQLiteValue] = [], row: ((SQLiteRow) throws -> Void)? = nil) throws -> Int {
        let statement = try prepared(sql)
        defer { sqlite3_reset(statement); sqlite3_clear_bindings(statement) }
        for (i, value) in bindings.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(statement, index)
            case .integer(let v): rc = sqlite3_bind_int64(statement, index, v)
            case .text(var v):
                // Bound by its byte count, not up to a NUL: an id "P1\u{0}x" must not find "P1".
                rc = v.withUTF8 { utf8 in
                    guard !utf8.isEmpty else { return sqlite3_bind_text(statement, index, "", 0, transient) }
                    return utf8.withMemoryRebound(to: CChar.self) { sqlite3_bind_text(statement, index, $0.baseAddress, Int32($0.count), transient) }
                }
            case .blob(let v): rc = v.withUnsafeBytes { sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), transient) }
            }
            guard rc == SQLITE_OK else { throw error(rc) }
        }
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc) }
            try row?(SQLiteRow(statement: statement))
        }
        return Int(sqlite3_changes(handle))
    }

    /// What a PASSIVE checkpoint did: frames in the WAL, and how many of them are now in the
    /// database file. When the two are equal, the next write starts the WAL again from its
    /// beginning (unless a reader still reads an older snapshot from it).
    struct Checkpoint: Sendable, Equatable {
        var busy: Bool
        var walFrames: Int
        var backfilledFrames: Int
        var isComplete: Bool { !busy && walFrames == backfilledFrames }
    }

    /// Copies the WAL's frames into the database file without waiting for, or blocking, the writer
    /// (a writer's later frames are left for the next checkpoint).
    func checkpointPassive() throws -> Checkpoint {
        var result = Checkpoint(busy: true, walFrames: 0, backfilledFrames: 0)
        try run("PRAGMA wal_checkpoint(PASSIVE)") { row in
            result = Checkpoint(busy: row.int(0) != 0, walFrames: Int(row.int(1)), backfilledFrames: Int(row.int(2)))
        }
        return result
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc) }
        statements[sql] = statement
        return statement
    }
}

enum SQLiteValue {
    case null
    case integer(Int64)
    case text(String)
    case blob([UInt8])

    static func optional(_ text: String?) -> SQLiteValue { text.map(SQLiteValue.text) ?? .null }
    static func optional(_ value: Int64?) -> SQLiteValue { value.map(SQLiteValue.integer) ?? .null }
}

struct SQLiteRow {
    let statement: OpaquePointer
    func isNull(_ i: Int32) -> Bool { sqlite3_column_type(statement, i) == SQLITE_NULL }
    func int(_ i: Int32) -> Int64 { sqlite3_column_int64(statement, i) }
    func optionalInt(_ i: Int32) -> Int64? { isNull(i) ? nil : int(i) }
    func text(_ i: Int32) -> String {
        guard let p = sqlite3_column_text(statement, i) else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: Int(sqlite3_column_bytes(statement, i))), as: UTF8.self)
    }
    func optionalText(_ i: Int32) -> String? { isNull(i) ? nil : text(i) }
    func blob(_ i: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(statement, i))
        guard count > 0, let p = sqlite3_column_blob(statement, i) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }
}
