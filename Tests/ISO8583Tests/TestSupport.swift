@testable import ISO8583

/// ASCII text to bytes, for writing expected wire forms by hand.
func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Bytes to text (ISO-8859-1), for readable comparisons.
func text(_ bytes: [UInt8]) -> String {
    String(String.UnicodeScalarView(bytes.map(Unicode.Scalar.init)))
}

let samplePAN = "4925000000004444"
let sampleTrack2 = "4925000000004444=25121010000012300000"

/// A 0100 authorization request with the fields most acquirers send.
func sampleAuthorization() -> ISOMessage {
    ISOMessage(mti: "0100", fields: [
        2: samplePAN, 3: "000000", 4: "000000010000", 7: "0605123456",
        11: "000123", 12: "123456", 13: "0605", 14: "2512", 22: "051",
        37: "123456789012", 41: "TERM0001", 42: "MERCHANT0000001", 49: "840",
    ])
}

/// A valid value of exactly the field's maximum length, so that after a round trip
/// it comes back unchanged (no padding added).
func maxLengthValue(for spec: ISOFieldSpec) -> String {
    let digits = Array("0123456789")
    let hex = Array("0123456789ABCDEF")
    let chars = Array("ABCXYZ abc-/=*,.09")
    func repeated(_ alphabet: [Character], _ count: Int) -> String {
        String((0..<count).map { alphabet[($0 * 7 + spec.number) % alphabet.count] })
    }
    switch spec.kind {
    case .numeric, .llnum: return repeated(digits, spec.length)
    case .char, .llchar, .lllchar: return repeated(chars, spec.length)
    case .binary: return repeated(hex, spec.length * 2)
    case .amount: return (spec.number % 2 == 0 ? "C" : "D") + repeated(digits, spec.length - 1)
    }
}

/// Small deterministic PRNG so fuzz-style tests are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
