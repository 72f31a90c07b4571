import Metrics
import Synchronization
import SQLitePaymentStore

/// The SQLite store's own counts as Prometheus counters, brought up to date when /metrics is read
/// (the writer keeps plain counts; the commit path never touches a metric): group commits, the
/// writes they carried (writes per commit is how well group commit gathers), and WAL restarts the
/// writer completed (none under steady load would mean the WAL is growing).
final class StoreMetrics: Sendable {
    private let store: SQLitePaymentStore
    private let commits: Counter
    private let writes: Counter
    private let walRestarts: Counter
    /// The counts already added to the counters.
    private let reported = Mutex((commits: 0, writes: 0, walRestarts: 0))

    init(store: SQLitePaymentStore, factory: any MetricsFactory) {
        self.store = store
        commits = Counter(label: "psp_store_commits_total", factory: factory)
        writes = Counter(label: "psp_store_writes_total", factory: factory)
        walRestarts = Counter(label: "psp_store_wal_restarts_total", factory: factory)
    }

    func update() {
        // Read under the lock: two scrapes at once must not move `last` backwards (and count a
        // delta twice).
        let delta = reported.withLock { last -> (Int, Int, Int) in
            let (commitCount, writeCount) = store.groupCommits
            let restartCount = store.walRestarts
            defer { last = (commitCount, writeCount, restartCount) }
            return (commitCount - last.commits, writeCount - last.writes, restartCount - last.walRestarts)
        }
        if delta.0 > 0 { commits.increment(by: delta.0) }
        if delta.1 > 0 { writes.increment(by: delta.1) }
        if delta.2 > 0 { walRestarts.increment(by: delta.2) }
    }
}
