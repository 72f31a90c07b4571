/// A map that keeps its latest `limit` entries: setting a key makes it the newest, and past the
/// limit the oldest goes first. For a memory that must stay bounded (the ISO 8583 adapter's first
/// sends of reversals and authorizations given up on, the SQLite store's cache of pending
/// payments): a host in trouble, or a flood of registrations, can make them pile up by the
/// thousand a second.
public struct RecentMap<Key: Hashable, Value> {
    public let limit: Int
    private var entries: [Key: (value: Value, serial: UInt64)] = [:]
    /// Keys in the order they were last set; an entry whose serial no longer matches was set again
    /// (or removed) since, and is skipped.
    private var order: [(key: Key, serial: UInt64)] = []
    private var head = 0
    private var nextSerial: UInt64 = 0

    public init(limit: Int) {
        precondition(limit > 0)
        self.limit = limit
    }

    public var count: Int { entries.count }

    public subscript(key: Key) -> Value? { entries[key]?.value }

    /// Sets `value` for `key`, as the newest entry.
    public mutating func set(_ value: Value, for key: Key) {
        nextSerial += 1
        entries[key] = (value, nextSerial)
        order.append((key, nextSerial))
        while entries.count > limit, head < order.count {
            let oldest = order[head]
            head += 1
            if entries[oldest.key]?.serial == oldest.serial { entries.removeValue(forKey: oldest.key) }
        }
        // Keys set again or removed leave stale places behind: dropped once they are half of the
        // order, or twice the entries (a map whose keys are mostly removed, not pushed out).
        if head > order.count / 2 || order.count - head > 2 * entries.count + 1024 {
            order = order[head...].filter { entries[$0.key]?.serial == $0.serial }
            head = 0
        }
    }

    @discardableResult
    public mutating func removeValue(forKey key: Key) -> Value? {
        entries.removeValue(forKey: key)?.value
    }
}
