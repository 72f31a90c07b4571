/// The share of each case kind in a run, from `approved=90,51=5,05=3,bad-cryptogram=1,wrong-token=1`.
public struct Mix: Sendable, Equatable, CustomStringConvertible {
    public struct Entry: Sendable, Equatable {
        public var kind: CaseKind
        public var weight: Double
    }

    public var entries: [Entry]

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case empty
        case malformed(String)
        case unknownKind(String)
        case badWeight(String)
        case repeated(String)

        public var description: String {
            switch self {
            case .empty: "the mix is empty"
            case .malformed(let item): "'\(item)' is not KIND=WEIGHT"
            case .unknownKind(let kind):
                "unknown kind '\(kind)': use approved, timeout, bad-cryptogram, wrong-token, duplicate, duplicate-in-flight, no, "
                    + "timeout-status, cancel, luhn, expired or a two-digit response code"
            case .badWeight(let item): "'\(item)': the weight must be a number from 0 to 1e9"
            case .repeated(let kind): "'\(kind)' appears twice"
            }
        }
    }

    public init(entries: [Entry]) { self.entries = entries }

    public init(parsing text: String) throws(ParseError) {
        var entries: [Entry] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw .malformed(String(item)) }
            let name = parts[0].trimmingSpaces
            guard let kind = CaseKind(name: name) else { throw .unknownKind(name) }
            guard let weight = Double(parts[1].trimmingSpaces), weight >= 0, weight <= 1e9 else { throw .badWeight(String(item)) }
            guard !entries.contains(where: { $0.kind == kind }) else { throw .repeated(name) }
            entries.append(Entry(kind: kind, weight: weight))
        }
        guard entries.contains(where: { $0.weight > 0 }) else { throw .empty }
        self.entries = entries
    }

    public var description: String {
        entries.map { "\($0.kind.name)=\($0.weight == $0.weight.rounded() ? String(Int($0.weight)) : String($0.weight))" }
            .joined(separator: ",")
    }

    /// How many of `total` payments each kind gets: exact shares rounded down, and the remainder
    /// to the largest fractions (earlier entries first on ties), so the counts always add up to `total`.
    public func counts(total: Int) -> [(kind: CaseKind, count: Int)] {
        let sum = entries.reduce(0) { $0 + $1.weight }
        let exact = entries.map { Double(total) * $0.weight / sum }
        var counts = exact.map { Int($0.rounded(.down)) }
        let order = exact.indices.sorted { a, b in
            let fa = exact[a] - exact[a].rounded(.down), fb = exact[b] - exact[b].rounded(.down)
            return fa != fb ? fa > fb : a < b
        }
        var left = total - counts.reduce(0, +)
        for i in order where left > 0 {
            counts[i] += 1
            left -= 1
        }
        return zip(entries, counts).map { ($0.kind, $1) }
    }

    /// The kind of each of `total` payments, in a shuffled order that depends only on `seed`, so a
    /// run can be repeated exactly and every kind is spread over the whole run.
    public func assign(total: Int, seed: UInt64) -> [CaseKind] {
        var kinds: [CaseKind] = []
        kinds.reserveCapacity(total)
        for (kind, count) in counts(total: total) {
            kinds.append(contentsOf: repeatElement(kind, count: count))
        }
        var generator = SplitMix64(seed: seed)
        kinds.shuffle(using: &generator)
        return kinds
    }
}

/// A small, fast generator with a fixed sequence per seed (the standard library's is not seedable).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
