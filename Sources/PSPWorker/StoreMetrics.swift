import Acquiring
import Metrics
import Synchronization
import SQLitePaymentStore

/// The SQLite store's own counts as Prometheus counters, brought up to date when /metrics is read
/// (the writer keeps plain counts; the commit path never touches a metric): group commits, the
/// writes they carried (writes per commit is how well group commit gathers), and WAL restarts the
/// writer completed (none under steady load would mean the WAL is growing), and the writer's stalls:
/// group commits and those checkpoints that took 5 ms, 20 ms or 100 ms or longer
/// (`psp_store_slow_commits_total{at_least_seconds="0.005"}`, `psp_store_slow_wal_restarts_total`),
/// which every write queued behind them waited out. And the reversals still to be acknowledged
/// (`psp_reversals_pending`) and how long the longest-due of them has been due
/// (`psp_reversals_overdue_seconds`), read from the store.
final class StoreMetrics: Sendable {
    private let store: SQLitePaymentStore
    private let commits: Counter
    private let writes: Counter
    private let walRestarts: Counter
    private let slowCommits: [Counter]
    private let slowRestarts: [Counter]
    private let reversalsPending: Gauge
    private let reversalsOverdue: Gauge
    /// The counts already added to the counters.
    private let reported = Mutex(SQLitePaymentStore.WriterStatistics())

    init(store: SQLitePaymentStore, factory: any MetricsFactory) {
        self.store = store
        commits = Counter(label: "psp_store_commits_total", factory: factory)
        writes = Counter(label: "psp_store_writes_total", factory: factory)
        walRestarts = Counter(label: "psp_store_wal_restarts_total", factory: factory)
        let thresholds = SQLitePaymentStore.slowThresholds.map { [("at_least_seconds", "\($0)")] }
        slowCommits = thresholds.map { Counter(label: "psp_store_slow_commits_total", dimensions: $0, factory: factory) }
        slowRestarts = thresholds.map { Counter(label: "psp_store_slow_wal_restarts_total", dimensions: $0, factory: factory) }
        reversalsPending = Gauge(label: "psp_reversals_pending", factory: factory)
        reversalsOverdue = Gauge(label: "psp_reversals_overdue_seconds", factory: factory)
    }

    func update() {
        // Read under the lock: two scrapes at once must not move `last` backwards (and count a
        // delta twice).
        let (now, last) = reported.withLock { last in
            let now = store.writerStatistics
            defer { last = now }
            return (now, last)
        }
        func add(_ counter: Counter, _ delta: Int) { if delta > 0 { counter.increment(by: delta) } }
        add(commits, now.commits - last.commits)
        add(writes, now.writes - last.writes)
        add(walRestarts, now.walRestarts - last.walRestarts)
        for i in slowCommits.indices {
            add(slowCommits[i], now.slowGroups[i] - last.slowGroups[i])
            add(slowRestarts[i], now.slowRestarts[i] - last.slowRestarts[i])
        }
        // The reversal backlog, from the store: left as last read if the read fails.
        if let backlog = try? store.reversalBacklog() {
            reversalsPending.record(backlog.pending)
            let overdue = backlog.earliestDue.map { max(0, wallClockMilliseconds() - $0) } ?? 0
            reversalsOverdue.record(Double(overdue) / 1000)
        }
    }
}
