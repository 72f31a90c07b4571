import Acquiring
import Testing

@Suite struct RecentMapTests {
    @Test func theOldestGoesFirstPastTheLimit() {
        var map = RecentMap<String, Int>(limit: 3)
        for (i, key) in ["a", "b", "c", "d"].enumerated() { map.set(i, for: key) }
        #expect(map.count == 3 && map["a"] == nil && map["d"] == 3)
    }

    /// A key set again is the newest: the stale place it left is skipped, never evicting it.
    @Test func aKeySetAgainIsTheNewest() {
        var map = RecentMap<String, Int>(limit: 3)
        map.set(1, for: "a"); map.set(2, for: "b"); map.set(3, for: "c")
        map.set(10, for: "a")  // "b" is now the oldest
        map.set(4, for: "d")
        #expect(map["a"] == 10 && map["b"] == nil && map["c"] == 3 && map["d"] == 4)
        // Removed and set again: its old place does not take the new entry with it.
        map.removeValue(forKey: "c")
        map.set(5, for: "c")
        map.set(6, for: "e")
        map.set(7, for: "f")
        #expect(map.count == 3 && map["c"] == 5 && map["e"] == 6 && map["f"] == 7)
    }

    @Test func manyRefreshesStayBounded() {
        var map = RecentMap<Int, Int>(limit: 100)
        for i in 0..<100_000 { map.set(i, for: i % 150) }
        #expect(map.count == 100)
        #expect((0..<100).allSatisfy { map[$0] == 99_900 + $0 })
    }
}
