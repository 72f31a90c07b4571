/// Strict standard-alphabet base64, decoding into a caller's buffer without allocating.
/// Strict because the sender knows its own framing: padding must be canonical, no white space,
/// no URL-safe alphabet, and unused trailing bits must be zero.
public enum StrictBase64 {
    private static let table: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            t[Int(c)] = UInt8(i)
        }
        return t
    }()

    /// Decodes `input` into `output`; returns the number of bytes written, or nil for any input that
    /// is not canonical base64 or does not fit.
    public static func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        let count = input.count
        guard count > 0, count % 4 == 0 else { return nil }
        let pad: Int = input[count - 1] == UInt8(ascii: "=") ? (input[count - 2] == UInt8(ascii: "=") ? 2 : 1) : 0
        let length = count / 4 * 3 - pad
        guard length <= output.count else { return nil }
        return table.withUnsafeBufferPointer { t -> Int? in
            var bad: UInt8 = 0
            var o = 0
            var i = 0
            let fullQuads = pad == 0 ? count / 4 : count / 4 - 1
            for _ in 0..<fullQuads {
                let a = t[Int(input[i])], b = t[Int(input[i + 1])], c = t[Int(input[i + 2])], d = t[Int(input[i + 3])]
                bad |= (a | b | c | d) & 0x80
                output[o] = a << 2 | b >> 4
                output[o + 1] = b << 4 | c >> 2
                output[o + 2] = c << 6 | d
                o += 3
                i += 4
            }
            if pad > 0 {
                let a = t[Int(input[i])], b = t[Int(input[i + 1])]
                bad |= (a | b) & 0x80
                output[o] = a << 2 | b >> 4
                o += 1
                if pad == 1 {
                    let c = t[Int(input[i + 2])]
                    bad |= c & 0x80
                    output[o] = b << 4 | c >> 2
                    o += 1
                    if c & 0x03 != 0 { return nil }  // non-canonical trailing bits
                } else if b & 0x0F != 0 {
                    return nil
                }
            }
            return bad == 0 ? o : nil
        }
    }

    /// Encodes `input` as standard base64 with padding.
    public static func encode(_ input: UnsafeRawBufferPointer) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        let outCount = (input.count + 2) / 3 * 4
        return String(unsafeUninitializedCapacity: outCount) { out in
            var i = 0, o = 0
            while i + 3 <= input.count {
                let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                out[o] = alphabet[Int(v >> 18 & 63)]; out[o + 1] = alphabet[Int(v >> 12 & 63)]
                out[o + 2] = alphabet[Int(v >> 6 & 63)]; out[o + 3] = alphabet[Int(v & 63)]
                i += 3; o += 4
            }
            let rest = input.count - i
            if rest > 0 {
                var v = UInt32(input[i]) << 16
                if rest == 2 { v |= UInt32(input[i + 1]) << 8 }
                out[o] = alphabet[Int(v >> 18 & 63)]; out[o + 1] = alphabet[Int(v >> 12 & 63)]
                out[o + 2] = rest == 2 ? alphabet[Int(v >> 6 & 63)] : UInt8(ascii: "=")
                out[o + 3] = UInt8(ascii: "=")
                o += 4
            }
            return o
        }
    }
}
