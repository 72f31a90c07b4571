import LoadGeneration
import Testing

@Suite struct MixTests {
    @Test func parsesKindsAndWeightsInOrder() throws {
        let mix = try Mix(parsing: "approved=90,51=5,05=3,timeout=1,bad-cryptogram=1")
        #expect(mix.entries.map(\.kind) == [.approved, .code("51"), .code("05"), .timeout, .badCryptogram])
        #expect(mix.entries.map(\.weight) == [90, 5, 3, 1, 1])
        #expect(mix.description == "approved=90,51=5,05=3,timeout=1,bad-cryptogram=1")
    }

    @Test func everyNamedKindParses() throws {
        let mix = try Mix(parsing: "wrong-token=1, duplicate=1,duplicate-in-flight=1,no=1,timeout-status=1,cancel=1,luhn=1,expired=0.5")
        #expect(mix.entries.map(\.kind) == [.wrongToken, .duplicate, .duplicateInFlight, .confirmedNo, .confirmedTimeout, .confirmedCancel, .luhn, .expired])
        #expect(mix.entries.last?.weight == 0.5)
        let api = try Mix(parsing: "NO=1,TIMEOUT=1,CANCEL=1,timeout=1")
        #expect(api.entries.map(\.kind) == [.confirmedNo, .confirmedTimeout, .confirmedCancel, .timeout])
    }

    @Test(arguments: [
        ("", Mix.ParseError.empty),
        ("approved=0", .empty),
        ("approved", .malformed("approved")),
        ("approved=1=2", .malformed("approved=1=2")),
        ("gold=1", .unknownKind("gold")),
        ("5=1", .unknownKind("5")),
        ("approved=-1", .badWeight("approved=-1")),
        ("approved=x", .badWeight("approved=x")),
        ("approved=inf", .badWeight("approved=inf")),
        ("approved=1e10", .badWeight("approved=1e10")),
        ("approved=1,approved=2", .repeated("approved")),
        ("99=1,timeout=1", .repeated("timeout")),
    ])
    func malformedMixIsRefused(text: String, error: Mix.ParseError) {
        #expect(throws: error) { try Mix(parsing: text) }
    }

    @Test func countsAreExactSharesAndAddUp() throws {
        let mix = try Mix(parsing: "approved=90,51=5,05=3,bad-cryptogram=1,wrong-token=1")
        let counts = mix.counts(total: 20_000)
        #expect(counts.map(\.count) == [18_000, 1_000, 600, 200, 200])
    }

    @Test func remainderGoesToTheLargestFractions() throws {
        // 10 × (1/3, 1/3, 1/3) = 3.33 each: the one left over goes to the first.
        let thirds = try Mix(parsing: "approved=1,51=1,05=1")
        #expect(thirds.counts(total: 10).map(\.count) == [4, 3, 3])
        // 7 × (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4: floors 3, 2, 1, then 3.5 and 1.4 get the two left.
        let uneven = try Mix(parsing: "approved=5,51=3,05=2")
        #expect(uneven.counts(total: 7).map(\.count) == [4, 2, 1])
        #expect(uneven.counts(total: 0).map(\.count) == [0, 0, 0])
    }

    @Test func assignmentIsAShuffleOfTheCountsFixedBySeed() throws {
        let mix = try Mix(parsing: "approved=90,51=5,05=3,bad-cryptogram=1,wrong-token=1")
        let kinds = mix.assign(total: 1_000, seed: 42)
        #expect(kinds.count == 1_000)
        #expect(kinds.filter { $0 == .approved }.count == 900)
        #expect(kinds.filter { $0 == .code("51") }.count == 50)
        #expect(kinds.filter { $0 == .wrongToken }.count == 10)
        #expect(mix.assign(total: 1_000, seed: 42) == kinds)
        #expect(mix.assign(total: 1_000, seed: 43) != kinds)
        // Spread over the run, not in blocks: the rare kinds are not all at the end.
        #expect(kinds[..<500].contains(.wrongToken) && kinds[500...].contains(.wrongToken))
    }
}
