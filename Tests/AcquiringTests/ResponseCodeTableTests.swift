import Acquiring
import Foundation
import MakePayment
import Testing

@Suite struct ResponseCodeTableTests {
    @Test func overridesBySchemeAndAcquirerWin() {
        var table = ResponseCodeTable()
        table.override("visa:05", with: .refused(.suspectedFraud))
        table.override("iso8583:05", with: .refused(.noSuchIssuer))
        #expect(table.decision(for: "05") == .refused(.refusedByIssuer))
        #expect(table.decision(for: "05", scheme: .visa) == .refused(.suspectedFraud))
        #expect(table.decision(for: "05", scheme: .visa, acquirer: "iso8583") == .refused(.noSuchIssuer))
        #expect(table.decision(for: "X9") == .refusedAndReversed(.refusedByIssuer), "an unmapped code never approves, and is reversed")
    }

    @Test func overridesLoadFromJSON() throws {
        let table = try ResponseCodeTable(overridesJSON: Data(#"{"05": 83, "mastercard:51": {"errorId": 72, "text": "Card blocked"}, "Z1": "approved", "16": {"errorId": 82, "reverse": true}}"#.utf8))
        #expect(table.decision(for: "05") == .refused(.suspectedFraud))
        #expect(table.decision(for: "16") == .refusedAndReversed(.refusedByIssuer))
        #expect(table.decision(for: "51", scheme: .mastercard).errorMessage == ErrorMessage(errorId: 72, errorText: "Card blocked"))
        #expect(table.decision(for: "Z1") == .approved)
        #expect(throws: ResponseCodeTableError.self) { _ = try ResponseCodeTable(overridesJSON: Data(#"{"05": 12}"#.utf8)) }
        // Only 72 has a text of its own; the others answer the API's text exactly.
        #expect(throws: ResponseCodeTableError.self) { _ = try ResponseCodeTable(overridesJSON: Data(#"{"05": {"errorId": 82, "text": "Declined"}}"#.utf8)) }
    }

    /// An override changes what Vipps is told, not whether an authorization that may stand is
    /// undone: 68 (the issuer may have approved), an unmapped code and a refused approval code keep
    /// their reversal unless the override says `"reverse": false`, and an approval code cannot.
    @Test func anOverrideKeepsTheReversalOfWhatItReplaces() throws {
        func table(_ json: String) throws -> ResponseCodeTable { try ResponseCodeTable(overridesJSON: Data(json.utf8)) }
        #expect(try table(#"{"68": 85}"#).decision(for: "68") == .refusedAndReversed(.responseReceivedTooLate))
        #expect(try table(#"{"visa:68": 83}"#).decision(for: "68", scheme: .visa) == .refusedAndReversed(.suspectedFraud))
        #expect(try table(#"{"16": 82}"#).decision(for: "16") == .refusedAndReversed(.refusedByIssuer))
        #expect(try table(#"{"00": 82}"#).decision(for: "00") == .refusedAndReversed(.refusedByIssuer))
        #expect(try table(#"{"Z1": "approved", "iso8583:Z1": 83}"#).decision(for: "Z1", acquirer: "iso8583") == .refusedAndReversed(.suspectedFraud))
        #expect(try table(#"{"iso8583:10": {"errorId": 72, "text": "Part only"}}"#).decision(for: "10", acquirer: "iso8583").reverses)
        // A refusal stays a plain refusal; the operator's explicit word stands where nothing was approved.
        #expect(try table(#"{"05": 83}"#).decision(for: "05") == .refused(.suspectedFraud))
        #expect(try table(#"{"68": {"errorId": 85, "reverse": false}}"#).decision(for: "68") == .refused(.responseReceivedTooLate))
        #expect(throws: ResponseCodeTableError.self) { _ = try table(#"{"00": {"errorId": 82, "reverse": false}}"#) }
        #expect(throws: ResponseCodeTableError.self) { _ = try table(#"{"visa:11": {"errorId": 82, "reverse": false}}"#) }
    }

    /// An override that could never match, or a field that would be left out, is refused: the
    /// default would otherwise stay in force with nothing said.
    @Test func anOverrideThatWouldBeIgnoredIsRefused() throws {
        for json in [#"{"Visa:05": 83}"#, #"{"vsa:05": 83}"#, #"{"5": 83}"#, #"{"00005": 83}"#, #"{":05": 83}"#, #"{"visa:": 83}"#,
                     #"{"16": {"errorId": 82, "reverse": "true"}}"#, #"{"16": {"errorId": 82, "reverse": 1}}"#,
                     #"{"16": {"errorId": 82, "reverses": true}}"#, #"{"03": {"errorId": 72, "text": 5}}"#] {
            #expect(throws: ResponseCodeTableError.self, "\(json)") { _ = try ResponseCodeTable(overridesJSON: Data(json.utf8), acquirer: "iso8583") }
        }
        // The acquirer's own name, whatever its spelling, and codes of 3 or 4 characters (ISO 8583:1993's action codes).
        let table = try ResponseCodeTable(overridesJSON: Data(#"{"Nets.no:Z9": 83, "000": "approved", "16": {"errorId": 82, "reverse": false}}"#.utf8),
                                          acquirer: "Nets.no")
        #expect(table.decision(for: "Z9", acquirer: "Nets.no") == .refusedAndReversed(.suspectedFraud))
        #expect(table.decision(for: "000") == .approved)
    }

    /// An override replaces only what it is more specific than: a scheme's never another
    /// scheme's, a code's alone never a scheme's or an acquirer's.
    @Test func anOverrideWeighsOnlyWhatItReplaces() throws {
        let schemes = try ResponseCodeTable(overridesJSON: Data(#"{"visa:05": "approved", "mastercard:05": 83}"#.utf8))
        #expect(schemes.decision(for: "05", scheme: .mastercard) == .refused(.suspectedFraud))
        let acquirer = try ResponseCodeTable(overridesJSON: Data(#"{"05": {"errorId": 82, "reverse": false}, "iso8583:05": "approved"}"#.utf8))
        #expect(acquirer.decision(for: "05") == .refused(.refusedByIssuer))
        // An acquirer's refusal replaces a scheme's approval: reversed.
        let over = try ResponseCodeTable(overridesJSON: Data(#"{"visa:05": "approved", "iso8583:05": 83}"#.utf8))
        #expect(over.decision(for: "05", scheme: .visa, acquirer: "iso8583") == .refusedAndReversed(.suspectedFraud))
    }
}
