/// The Luhn (mod 10) check of card numbers: the check on a number, and the check digit a test
/// card's number is made with.
public enum Luhn {
    /// Whether the ASCII digits `digits`, check digit last, pass the check.
    @inlinable
    public static func passes(_ digits: some BidirectionalCollection<UInt8>) -> Bool {
        sum(digits, checkDigitIncluded: true) % 10 == 0
    }

    /// The check digit that completes the ASCII digits `body`.
    @inlinable
    public static func checkDigit(for body: some BidirectionalCollection<UInt8>) -> Int {
        (10 - sum(body, checkDigitIncluded: false) % 10) % 10
    }

    /// Every second digit from the right doubled (its digits summed), starting with the last
    /// when the check digit is still to come.
    @inlinable
    static func sum(_ digits: some BidirectionalCollection<UInt8>, checkDigitIncluded: Bool) -> Int {
        var sum = 0
        var double = !checkDigitIncluded
        for byte in digits.reversed() {
            var d = Int(byte &- UInt8(ascii: "0"))
            if double { d *= 2; if d > 9 { d -= 9 } }
            sum += d
            double.toggle()
        }
        return sum
    }
}
