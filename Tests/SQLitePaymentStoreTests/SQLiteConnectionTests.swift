import Foundation
@testable import SQLitePaymentStore
import Testing

/// What a statement stores is exactly what `run` bound: empty is not NULL, a NUL inside a text is
/// kept (texts are bound by byte count), and large values arrive whole.
@Suite struct SQLiteConnectionTests {
    let scratch: ScratchTable
    var db: SQLiteConnection { scratch.connection }

    init() throws {
        scratch = try ScratchTable()
        try db.execute("CREATE TABLE v (k TEXT PRIMARY KEY, t TEXT, b BLOB)")
    }

    func stored(_ key: String) throws -> (text: String?, textIsNull: Bool, blob: [UInt8], blobIsNull: Bool)? {
        var found: (String?, Bool, [UInt8], Bool)?
        try db.run("SELECT t, b FROM v WHERE k = ?", [.text(key)]) { row in
            found = (row.optionalText(0), row.isNull(0), row.blob(1), row.isNull(1))
        }
        return found
    }

    @Test func emptyValuesAreNotNull() throws {
        defer { scratch.remove() }
        try db.run("INSERT INTO v (k, t, b) VALUES (?, ?, ?)", [.text(""), .text(""), .blob([])])
        try db.run("INSERT INTO v (k, t, b) VALUES (?, ?, ?)", [.text("nulls"), .null, .null])
        let empty = try #require(try stored(""))
        #expect(empty.text == "" && !empty.textIsNull)
        #expect(empty.blob.isEmpty && !empty.blobIsNull)
        let nulls = try #require(try stored("nulls"))
        #expect(nulls.textIsNull && nulls.blobIsNull)
    }

    @Test func largeValuesAreBoundWhole() throws {
        defer { scratch.remove() }
        let large = String(repeating: "0123456789", count: 2_000) + "\u{0}end"
        let blob = (0..<30_000).map { UInt8($0 % 251) }
        try db.run("INSERT INTO v (k, t, b) VALUES (?, ?, ?)", [.text("large-" + large), .text(large), .blob(blob)])
        try db.run("INSERT INTO v (k, t, b) VALUES (?, ?, ?)", [.text("small"), .text("s\u{0}"), .blob([1, 2])])
        let got = try #require(try stored("large-" + large))
        #expect(got.text == large)
        #expect(got.blob == blob)
        let small = try #require(try stored("small"))
        #expect(small.text == "s\u{0}" && small.blob == [1, 2])
    }
}
