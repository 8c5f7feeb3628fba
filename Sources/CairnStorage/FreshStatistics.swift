import Synchronization

/// Keeps the PostgreSQL planner's statistics of a table that grows fast from empty close to
/// its size, sooner than autovacuum would.
///
/// Why: a table never analyzed has no statistics, and the planner then guesses that any
/// equality matches a few rows. Two indexes sharing a prefix look alike to it, and it may take
/// the one that reads every row under the prefix: the inbox's dedupe check read all of a
/// user's notifications through `notifications_user_seq` (22 ms a batch at 84,000 rows, and
/// growing) where `notifications_dedupe` answers in a probe per key. Autovacuum analyzes a
/// table after 50 rows plus 10 % of it have changed, but looks at most once a minute
/// (`autovacuum_naptime`), and a burst fills a table long before that.
///
/// So the owner reports the rows it added (``added(_:)``), and this process analyzes the table
/// when they pass 1,000, then each doubling, up to `last` (65,536 by default); by then the
/// statistics tell the planner how unselective a prefix is, and autovacuum keeps up from there.
/// At most log2(`last` / 1,000) + 1 analyses (seven by default) per table and process, and none
/// while the statistics already count twice the rows this process added (a node restarted on a
/// big table, or one that another node or autovacuum analyzed meanwhile).
package final class FreshStatistics: Sendable {
    private let database: Database
    private let table: String
    private let last: Int
    private let state: Mutex<(added: Int, next: Int)>
    /// The last analysis started (see ``settled()``).
    private let lastAnalysis: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// Watches `table` of `database`: the first analysis after `first` rows, the last after
    /// `last` (both at least 1).
    package init(database: Database, table: String, first: Int = 1_000, last: Int = 65_536) {
        self.database = database
        self.table = table
        self.last = max(1, last)
        self.state = Mutex((added: 0, next: max(1, first)))
    }

    /// Notes `rows` rows added to the table and committed. When that passes the next threshold,
    /// starts the analysis in a task of its own (``settled()`` waits for it); a failure is
    /// ignored (autovacuum remains).
    /// - Returns: whether an analysis started (never on SQLite).
    @discardableResult
    package func added(_ rows: Int) -> Bool {
        guard rows > 0, database.dialect == .postgres else { return false }
        let due = state.withLock { state -> Int? in
            state.added += rows
            guard state.next <= last, state.added >= state.next else { return nil }
            while state.next <= state.added { state.next *= 2 }
            return state.added
        }
        guard let added = due else { return false }
        let database = self.database
        let table = self.table
        let task = Task { _ = try? await database.analyze(table: table, unlessCounted: min(added, .max / 2) * 2) }
        lastAnalysis.withLock { $0 = task }
        return true
    }

    /// Returns once the last analysis started so far has ended (at once when none was): what a
    /// test waits on after adding rows.
    package func settled() async {
        await lastAnalysis.withLock { $0 }?.value
    }
}
