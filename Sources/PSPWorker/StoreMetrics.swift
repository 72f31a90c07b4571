import Metrics
import Synchronization
import SQLitePaymentStore

/// The SQLite store's own counts as Prometheus counters, brought up to date when /metrics is read
/// (the writer keeps plain counts; the commit path never touches a metric): group commits, the
/// writes they carried (writes per commit is how well group commit gathers), and WAL restarts the
/// writer completed (none under steady load would mean the WAL is growing), and the writer's stalls:
/// group commits and those checkpoints that took 5 ms, 20 ms or 100 ms or longer
/// (`psp_store_slow_commits_total{at_least_seconds="0.005"}`, `psp_store_slow_wal_restarts_total`),
/// which every write queued behind them waited out.
final class StoreMetrics: Sendable {
    private let store: SQLitePaymentStore
    private let commits: Counter
    private let writes: Counter
    private let walRestarts: Counter
    private let slowCommits: [Counter]
    private let slowRestarts: [Counter]
    /// The counts already added to the counters.
    private let reported = Mutex((commits: 0, writes: 0, walRestarts: 0,
                                  slow: (groups: [Int](repeating: 0, count: SQLitePaymentStore.slowThresholds.count),
                                         restarts: [Int](repeating: 0, count: SQLitePaymentStore.slowThresholds.count))))

    init(store: SQLitePaymentStore, factory: any MetricsFactory) {
        self.store = store
        commits = Counter(label: "psp_store_commits_total", factory: factory)
        writes = Counter(label: "psp_store_writes_total", factory: factory)
        walRestarts = Counter(label: "psp_store_wal_restarts_total", factory: factory)
        let thresholds = SQLitePaymentStore.slowThresholds.map { [("at_least_seconds", "\($0)")] }
        slowCommits = thresholds.map { Counter(label: "psp_store_slow_commits_total", dimensions: $0, factory: factory) }
        slowRestarts = thresholds.map { Counter(label: "psp_store_slow_wal_restarts_total", dimensions: $0, factory: factory) }
    }

    func update() {
        // Read under the lock: two scrapes at once must not move `last` backwards (and count a
        // delta twice).
        let delta = reported.withLock { last -> (Int, Int, Int, [Int], [Int]) in
            let (commitCount, writeCount) = store.groupCommits
            let restartCount = store.walRestarts
            let slow = store.slowWrites
            defer { last = (commitCount, writeCount, restartCount, slow) }
            return (commitCount - last.commits, writeCount - last.writes, restartCount - last.walRestarts,
                    zip(slow.groups, last.slow.groups).map { $0 - $1 }, zip(slow.restarts, last.slow.restarts).map { $0 - $1 })
        }
        if delta.0 > 0 { commits.increment(by: delta.0) }
        if delta.1 > 0 { writes.increment(by: delta.1) }
        if delta.2 > 0 { walRestarts.increment(by: delta.2) }
        for (counter, d) in zip(slowCommits, delta.3) where d > 0 { counter.increment(by: d) }
        for (counter, d) in zip(slowRestarts, delta.4) where d > 0 { counter.increment(by: d) }
    }
}
