import Testing
@testable import ISO8583

@Suite("ISO87APackager field table")
struct FieldTableTests {
    @Test("table covers fields 2...128 in order, no gaps")
    func tableIsComplete() {
        #expect(ISO87APackager.fieldSpecs.count == 127)
        #expect(ISO87APackager.fieldSpecs.map(\.number) == Array(2...128))
        for spec in ISO87APackager.fieldSpecs {
            #expect(spec.length > 0 && spec.length <= 999, "field \(spec.number)")
            #expect(!spec.name.isEmpty)
        }
    }

    @Test("fields outside 2...128 have no spec", arguments: [-1, 0, 1, 129, 192])
    func noSpecOutsideRange(field: Int) {
        #expect(ISO87APackager.spec(for: field) == nil)
    }

    // The layout jPOS ISO87APackager uses; a typo here would silently break interop.
    @Test("key fields match jPOS ISO87APackager", arguments: [
        (2, ISOFieldKind.llnum, 19), (3, .numeric, 6), (4, .numeric, 12), (7, .numeric, 10),
        (11, .numeric, 6), (12, .numeric, 6), (13, .numeric, 4), (14, .numeric, 4),
        (18, .numeric, 4), (22, .numeric, 3), (25, .numeric, 2), (28, .amount, 9),
        (32, .llnum, 11), (34, .llchar, 28), (35, .llnum, 37), (36, .lllchar, 104),
        (37, .char, 12), (38, .char, 6), (39, .char, 2), (41, .char, 8), (42, .char, 15),
        (43, .char, 40), (44, .llchar, 25), (45, .llchar, 76), (48, .lllchar, 999),
        (49, .char, 3), (52, .binary, 8), (53, .numeric, 16), (54, .lllchar, 120),
        (55, .lllchar, 999), (60, .lllchar, 999), (61, .lllchar, 999), (62, .lllchar, 999),
        (63, .lllchar, 999), (64, .binary, 8), (65, .binary, 1), (66, .numeric, 1),
        (70, .numeric, 3), (90, .numeric, 42), (93, .char, 6), (95, .char, 42),
        (96, .binary, 16), (97, .amount, 17), (100, .llnum, 11), (102, .llchar, 28),
        (104, .lllchar, 100), (127, .lllchar, 999), (128, .binary, 8),
    ])
    func keyField(number: Int, kind: ISOFieldKind, length: Int) throws {
        let spec = try #require(ISO87APackager.spec(for: number))
        #expect(spec.number == number)
        #expect(spec.kind == kind)
        #expect(spec.length == length)
    }

    @Test("prefix digits per jPOS class")
    func prefixDigits() {
        #expect(ISOFieldKind.llnum.prefixDigits == 2)
        #expect(ISOFieldKind.llchar.prefixDigits == 2)
        #expect(ISOFieldKind.lllchar.prefixDigits == 3)
        for kind in [ISOFieldKind.numeric, .char, .binary, .amount] {
            #expect(kind.prefixDigits == 0)
        }
        #expect(ISOFieldKind.llnum.rawValue == "IFA_LLNUM")
    }
}
