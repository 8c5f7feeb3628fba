import CairnHTTP
package import CairnStorage
import Foundation
import SQLKit

/// SQL for the `jobs` table, written once for both engines. Claiming is one statement:
/// `UPDATE … WHERE id IN (SELECT … LIMIT n)`, with `FOR UPDATE SKIP LOCKED` on PostgreSQL so
/// nodes never wait on each other; on SQLite the single writer makes it atomic.
@MemberwiseInit
package struct JobStore: Sendable {
    /// The database.
    package let database: Database

    static let columns = """
        id, tenant_id, queue, kind, args, priority, state, attempt, max_attempts, run_at, progress, checkpoint, errors, \
        unique_key, created_by, created_at, attempted_at, finished_at, lease_owner, lease_expires_at, cancel_requested_at, version, result, \
        trace_context, timeout_ms
        """

    /// `columns`, in order, for SQLKit rows read by name.
    static let columnNames = columns.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }

    /// A job from a row holding `columns` in order.
    static func job(from row: PositionalRow) throws -> Job {
        Job(
            id: try row.string(0), tenantId: try row.string(1), queue: try row.string(2), kind: try row.string(3), args: try row.string(4),
            priority: try row.int(5), state: JobState(rawValue: try row.string(6)) ?? .discarded, attempt: try row.int(7),
            maxAttempts: try row.int(8), timeoutMs: try row.optionalInt64(24), runAt: try row.int64(9), progress: try row.optionalString(10),
            checkpoint: try row.optionalString(11),
            result: try row.optionalString(22), errors: try row.string(12), uniqueKey: try row.optionalString(13),
            createdBy: try row.optionalString(14), createdAt: try row.int64(15), attemptedAt: try row.optionalInt64(16),
            finishedAt: try row.optionalInt64(17), leaseOwner: try row.optionalString(18), leaseExpiresAt: try row.optionalInt64(19),
            cancelRequestedAt: try row.optionalInt64(20), version: try row.int(21), traceContext: try row.optionalString(23))
    }

    /// A job from a SQLKit row holding `columns`.
    static func job(from row: any SQLRow) throws -> Job {
        try job(from: PositionalRow(row, columns: columnNames))
    }

    /// The states as SQL literals, not binds: they are the enum's own constants (no outside
    /// value reaches them), and PostgreSQL matches a partial index's `WHERE state IN (…)`
    /// predicate only against literals.
    static func stateList(_ states: [JobState]) -> SQLQueryString {
        SQLQueryString("(" + states.map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")")
    }

    // MARK: Enqueue

    /// Inserts a job, or returns the unfinished job with the same tenant, kind and unique key.
    /// Runs on `db` when given (the caller's transaction), so a row and its job commit together.
    /// - Returns: the job and whether it was newly inserted.
    static func insert(_ job: Job, on db: any SQLDatabase) async throws -> (job: Job, inserted: Bool) {
        let inserted = try await db.raw(
            """
            INSERT INTO jobs (\(unsafeRaw: columns)) VALUES (
                \(bind: job.id), \(bind: job.tenantId), \(bind: job.queue), \(bind: job.kind), \(bind: job.args), \(bind: job.priority),
                \(bind: job.state.rawValue), 0, \(bind: job.maxAttempts), \(bind: job.runAt), NULL, NULL, '[]', \(bind: job.uniqueKey),
                \(bind: job.createdBy), \(bind: job.createdAt), NULL, NULL, NULL, NULL, NULL, 1, NULL, \(bind: job.traceContext),
                \(bind: job.timeoutMs))
            ON CONFLICT DO NOTHING
            RETURNING \(unsafeRaw: columns)
            """
        ).first()
        if let inserted { return (try Self.job(from: inserted), true) }
        guard let uniqueKey = job.uniqueKey,
            let existing = try await db.raw(
                """
                SELECT \(unsafeRaw: columns) FROM jobs WHERE tenant_id = \(bind: job.tenantId) AND kind = \(bind: job.kind)
                AND unique_key = \(bind: uniqueKey) AND state IN \(stateList([.scheduled, .available, .running, .retryable]))
                """
            ).first()
        else {
            throw AppError.conflict("A job with this id already exists.")
        }
        return (try Self.job(from: existing), false)
    }

    /// Inserts many jobs in multi-row statements (500 rows each, well under both engines' bind
    /// limits); a job whose unique key an unfinished job already holds comes back as that job.
    /// - Returns: one entry per input job, in input order, with whether it was inserted.
    static func insertMany(_ jobs: [Job], on db: any SQLDatabase) async throws -> [(job: Job, inserted: Bool)] {
        var results: [(job: Job, inserted: Bool)] = []
        results.reserveCapacity(jobs.count)
        for chunk in jobs.chunks(of: 500) {
            let rows = chunk.map { job -> any SQLExpression in
                SQLQueryString(
                    """
                    (\(bind: job.id), \(bind: job.tenantId), \(bind: job.queue), \(bind: job.kind), \(bind: job.args), \(bind: job.priority), \
                    \(bind: job.state.rawValue), 0, \(bind: job.maxAttempts), \(bind: job.runAt), NULL, NULL, '[]', \(bind: job.uniqueKey), \
                    \(bind: job.createdBy), \(bind: job.createdAt), NULL, NULL, NULL, NULL, NULL, 1, NULL, \(bind: job.traceContext), \
                    \(bind: job.timeoutMs))
                    """)
            }
            // Only the ids come back: an inserted row is exactly the values written (below), and
            // decoding all 25 columns of each row through SQLKit's by-name Codable decoding was
            // a tenth of a busy node's CPU.
            let inserted = try await db.raw(
                """
                INSERT INTO jobs (\(unsafeRaw: columns)) VALUES \(SQLList(rows)) ON CONFLICT DO NOTHING RETURNING id
                """
            ).all().map { try $0.decode(column: "id", as: String.self) }
            let insertedIds = Set(inserted)
            for job in chunk {
                if insertedIds.contains(job.id) {
                    results.append((job.asInserted, true))
                } else {
                    // Rare: a unique key already held (possibly by an earlier job of this batch).
                    results.append(try await insert(job, on: db))
                }
            }
        }
        return results
    }

    /// Unfinished jobs of a tenant (the pending cap).
    func unfinishedCount(tenantId: String) async throws -> Int {
        try await database.read { db in
            try await db.raw(
                "SELECT COUNT(*) AS n FROM jobs WHERE tenant_id = \(bind: tenantId) AND state IN \(Self.stateList([.scheduled, .available, .retryable]))"
            ).first()?.decode(column: "n", as: Int.self) ?? 0
        }
    }

    // MARK: Workers

    /// Claims up to `limit` due jobs for `node`, most urgent first, skipping tenants in
    /// `excludedTenants` (at their per-node running cap). Each claimed job starts an attempt
    /// and carries a lease until `now + leaseMs`.
    func claim(node: String, limit: Int, excludedTenants: Set<String>, queues: [String], now: Int64, leaseMs: Int64) async throws -> [Job] {
        guard limit > 0 else { return [] }
        let dialect = database.dialect
        if dialect == .postgres && queues.isEmpty {
            return try await database.writeRows(
                ClaimStatement.self,
                [.integer(now), .text(node), .integer(now + leaseMs), .textArray(excludedTenants.sorted()), .integer(Int64(limit))],
                Self.job(from:))
        }
        return try await database.write { db in
            var inner: SQLQueryString = """
                SELECT id FROM jobs WHERE state IN \(Self.stateList(JobState.waiting)) AND run_at <= \(bind: now)
                """
            if !queues.isEmpty {
                inner = inner + " AND queue IN (\(SQLList(queues.map { SQLBind($0) })))"
            }
            if !excludedTenants.isEmpty {
                inner = inner + " AND tenant_id NOT IN (\(SQLList(excludedTenants.sorted().map { SQLBind($0) })))"
            }
            inner = inner + " ORDER BY priority, run_at, id LIMIT \(bind: limit)"
            if dialect == .postgres { inner = inner + " FOR UPDATE SKIP LOCKED" }
            return try await db.raw(
                """
                UPDATE jobs SET version = version + 1, state = 'running', attempt = attempt + 1, attempted_at = \(bind: now), lease_owner = \(bind: node),
                    lease_expires_at = \(bind: now + leaseMs)
                WHERE id IN (\(inner))
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).all().map(Self.job(from:))
        }
    }

    /// The tenants that have waiting jobs, at most `limit` of them, in tenant id order after
    /// `after` (`""` for the first), each with its most urgent job due by `now` (its priority
    /// and `run_at`, nil when none is due yet): what a fair claim chooses between
    /// (``FairClaim``). One index probe per tenant plus two for its head, however long its
    /// queue is (`jobs_tenant_waiting`).
    func waitingTenants(after: String, limit: Int, now: Int64) async throws -> [FairClaim.TenantHead] {
        try await database.readRows(DueTenantsStatement.self, [.integer(now), .text(after), .integer(Int64(limit))]) { row in
            FairClaim.TenantHead(tenantId: try row.string(0), priority: try row.optionalInt64(1).map(Int.init), runAt: try row.optionalInt64(2))
        }
    }

    /// ``waitingTenants(after:limit:now:)``'s statement: a recursive skip scan over the tenants with
    /// waiting jobs (`$2`: start after this id, `$3`: at most this many), and for each one the
    /// priority and `run_at` of its first job due by `$1` (NULL when none is due yet).
    enum DueTenantsStatement: PreparedRead {
        static let name = "cairn_jobs_due_tenants"
        static let sql = """
            WITH RECURSIVE waiting(tenant_id) AS (
                SELECT (SELECT tenant_id FROM jobs WHERE state IN ('scheduled', 'available', 'retryable') AND tenant_id > $2
                    ORDER BY tenant_id LIMIT 1)
                UNION ALL
                SELECT (SELECT next.tenant_id FROM jobs next WHERE next.state IN ('scheduled', 'available', 'retryable')
                    AND next.tenant_id > waiting.tenant_id ORDER BY next.tenant_id LIMIT 1)
                FROM waiting WHERE waiting.tenant_id IS NOT NULL
            )
            SELECT waiting.tenant_id,
                (SELECT priority FROM jobs WHERE jobs.tenant_id = waiting.tenant_id AND state IN ('scheduled', 'available', 'retryable')
                    AND run_at <= $1 ORDER BY priority, run_at, id LIMIT 1),
                (SELECT run_at FROM jobs WHERE jobs.tenant_id = waiting.tenant_id AND state IN ('scheduled', 'available', 'retryable')
                    AND run_at <= $1 ORDER BY priority, run_at, id LIMIT 1)
            FROM waiting WHERE waiting.tenant_id IS NOT NULL LIMIT $3
            """
    }

    /// Claims for `node`, from each tenant in `shares`, up to its count of that tenant's due
    /// jobs in the tenant's own order (most urgent, then oldest), in one statement; each starts
    /// an attempt with a lease until `now + leaseMs`. On PostgreSQL rows another node is claiming
    /// are skipped (`SKIP LOCKED`), so a tenant may give fewer than its count.
    func claim(node: String, shares: [FairClaim.Share], now: Int64, leaseMs: Int64) async throws -> [Job] {
        let shares = shares.filter { $0.count > 0 }
        guard !shares.isEmpty else { return [] }
        let lock: SQLQueryString = database.dialect == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
        return try await database.write { db in
            // One sub-select per tenant, each reading its tenant's part of `jobs_tenant_waiting`
            // in order; PostgreSQL locks rows inside each one, as UNION forbids it outside.
            var pick: SQLQueryString = ""
            for (index, share) in shares.enumerated() {
                if index > 0 { pick = pick + " UNION ALL " }
                pick =
                    pick
                        + """
                        SELECT id FROM (SELECT id FROM jobs WHERE tenant_id = \(bind: share.tenantId) AND state IN \(Self.stateList(JobState.waiting))
                            AND run_at <= \(bind: now) ORDER BY priority, run_at, id LIMIT \(bind: share.count)\(lock)) share\(unsafeRaw: String(index))
                        """
            }
            return try await db.raw(
                """
                UPDATE jobs SET version = version + 1, state = 'running', attempt = attempt + 1, attempted_at = \(bind: now), lease_owner = \(bind: node),
                    lease_expires_at = \(bind: now + leaseMs)
                WHERE id IN (\(pick))
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).all().map(Self.job(from:))
        }
    }

    /// Extends the leases `node` holds; returns the ids it still holds.
    func renew(ids: [String], node: String, until: Int64) async throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return try await database.write { db in
            Set(
                try await db.raw(
                    """
                    UPDATE jobs SET lease_expires_at = \(bind: until)
                    WHERE id IN (\(SQLList(ids.map { SQLBind($0) }))) AND lease_owner = \(bind: node) AND state = 'running'
                    RETURNING id
                    """
                ).all().map { try $0.decode(column: "id", as: String.self) })
        }
    }

    /// What runs, in the same transaction, for jobs a change ended without success (`cancelled`
    /// or `discarded`): the job queue passes its kinds' ``JobQueue/register(_:handler:abandoned:)``
    /// hooks, so the work a job stood for is settled with it (after a crash too, by the rescue).
    typealias AbandonHook = @Sendable (_ jobs: [Job], _ db: any SQLDatabase) async throws -> Void

    /// Runs `change` (whose second result is the jobs it changed, in their new state) as a single
    /// write, or, with `abandoned`, in a transaction that also hands it the jobs now cancelled or
    /// discarded.
    private func changing<R: Sendable>(
        abandoned: AbandonHook?, _ change: @escaping @Sendable (any SQLDatabase) async throws -> (R, [Job])
    ) async throws -> R {
        guard let abandoned else { return try await database.write { try await change($0).0 } }
        return try await database.transaction { db in
            let (result, changed) = try await change(db)
            let ended = changed.filter { $0.state == .cancelled || $0.state == .discarded }
            if !ended.isEmpty { try await abandoned(ended, db) }
            return result
        }
    }

    /// Ends a running attempt held by `node`. Returns false when the lease was lost.
    func finish(
        id: String, node: String, state: JobState, runAt: Int64? = nil, errors: String? = nil, now: Int64, abandoned: AbandonHook? = nil
    ) async throws -> Bool {
        return try await changing(abandoned: abandoned) { db in
            var sets: [any SQLExpression] = [
                SQLRaw("version = version + 1"), SQLQueryString("state = \(bind: state.rawValue)"), SQLRaw("lease_owner = NULL"),
                SQLRaw("lease_expires_at = NULL"),
            ]
            if state.isFinal { sets.append(SQLQueryString("finished_at = \(bind: now)")) }
            if let runAt { sets.append(SQLQueryString("run_at = \(bind: runAt)")) }
            if let errors { sets.append(SQLQueryString("errors = \(bind: errors)")) }
            let ended = try await db.raw(
                """
                UPDATE jobs SET \(SQLList(sets)) WHERE id = \(bind: id) AND lease_owner = \(bind: node) AND state = 'running'
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).first().map(Self.job(from:))
            return (ended != nil, ended.map { [$0] } ?? [])
        }
    }

    /// Marks running jobs `node` holds as succeeded, in one statement (batched completions, and
    /// single ones). Jobs whose lease was lost are left alone.
    /// - Returns: how many jobs it marked (the others' leases were lost).
    @discardableResult
    func succeed(ids: [String], node: String, now: Int64) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        if database.dialect == .postgres {
            return try await database.writeRows(SucceedStatement.self, [.textArray(ids), .text(node), .integer(now)]) { _ in () }.count
        }
        return try await database.write { db in
            try await db.raw(
                """
                UPDATE jobs SET version = version + 1, state = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = \(bind: now)
                WHERE id IN (\(SQLList(ids.map { SQLBind($0) }))) AND lease_owner = \(bind: node) AND state = 'running'
                RETURNING id
                """
            ).all().count
        }
    }

    /// The claim on PostgreSQL, prepared: its plan (about 0.8 ms when planned per claim) is
    /// made once per connection. `$4` is the excluded tenants (possibly none), `$5` the limit.
    enum ClaimStatement: PreparedRead {
        static let name = "cairn_jobs_claim"
        static let sql = """
            UPDATE jobs SET version = version + 1, state = 'running', attempt = attempt + 1, attempted_at = $1, lease_owner = $2,
                lease_expires_at = $3
            WHERE id IN (
                SELECT id FROM jobs WHERE state IN ('scheduled', 'available', 'retryable') AND run_at <= $1 AND tenant_id <> ALL($4::text[])
                ORDER BY priority, run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
            RETURNING \(JobStore.columns)
            """
    }

    /// Successful completions on PostgreSQL, prepared, the ids as one `text[]`: one plan serves
    /// every batch size.
    enum SucceedStatement: PreparedRead {
        static let name = "cairn_jobs_succeed"
        static let sql = """
            UPDATE jobs SET version = version + 1, state = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = $3
            WHERE id = ANY($1::text[]) AND lease_owner = $2 AND state = 'running'
            RETURNING 1
            """
    }

    /// Hands jobs back without consuming an attempt (graceful shutdown). A job whose
    /// cancellation was requested is cancelled instead: it must not run again elsewhere.
    func release(ids: [String], node: String, now: Int64 = WallClock.milliseconds(), abandoned: AbandonHook? = nil) async throws {
        guard !ids.isEmpty else { return }
        try await changing(abandoned: abandoned) { db in
            let released = try await db.raw(
                """
                UPDATE jobs SET version = version + 1, state = CASE WHEN cancel_requested_at IS NULL THEN 'available' ELSE 'cancelled' END,
                    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE \(bind: now) END,
                    attempt = attempt - 1, lease_owner = NULL, lease_expires_at = NULL
                WHERE id IN (\(SQLList(ids.map { SQLBind($0) }))) AND lease_owner = \(bind: node) AND state = 'running'
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).all().map(Self.job(from:))
            return ((), released)
        }
    }

    /// Returns jobs whose lease lapsed (their node died) to the queue, or discards them when no
    /// attempt is left, or cancels them when their cancellation was requested (as River's
    /// rescuer does). Returns the rescued jobs.
    func rescue(now: Int64, abandoned: AbandonHook? = nil) async throws -> [Job] {
        try await changing(abandoned: abandoned) { db in
            let lapsed = try await db.raw(
                """
                UPDATE jobs SET version = version + 1,
                    state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                        WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
                    finished_at = CASE WHEN cancel_requested_at IS NOT NULL OR attempt >= max_attempts THEN \(bind: now) ELSE NULL END,
                    lease_owner = NULL, lease_expires_at = NULL
                WHERE state = 'running' AND lease_expires_at < \(bind: now)
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).all().map(Self.job(from:))
            return (lapsed, lapsed)
        }
    }

    /// Jobs `node` runs whose cancellation was requested.
    func cancelRequested(node: String) async throws -> [String] {
        try await database.read { db in
            try await db.raw(
                "SELECT id FROM jobs WHERE state = 'running' AND lease_owner = \(bind: node) AND cancel_requested_at IS NOT NULL"
            ).all().map { try $0.decode(column: "id", as: String.self) }
        }
    }

    /// Stores progress, a checkpoint or the result of a running job held by `node`; false when
    /// the lease is lost.
    func save(id: String, node: String, progress: String?, checkpoint: String?, result: String? = nil) async throws -> Bool {
        try await database.write { db in
            var sets: [any SQLExpression] = []
            if let progress { sets.append(SQLQueryString("progress = \(bind: progress)")) }
            if let checkpoint { sets.append(SQLQueryString("checkpoint = \(bind: checkpoint)")) }
            if let result { sets.append(SQLQueryString("result = \(bind: result)")) }
            guard !sets.isEmpty else { return true }
            sets.append(SQLRaw("version = version + 1"))
            return try await db.raw(
                "UPDATE jobs SET \(SQLList(sets)) WHERE id = \(bind: id) AND lease_owner = \(bind: node) AND state = 'running' RETURNING id"
            ).first() != nil
        }
    }

    /// Deletes finished jobs older than `before` (succeeded and cancelled; dead letters stay).
    func prune(before: Int64) async throws -> Int {
        try await database.write { db in
            try await db.raw(
                "DELETE FROM jobs WHERE state IN ('succeeded', 'cancelled') AND finished_at < \(bind: before) RETURNING id"
            ).all().count
        }
    }

    /// Jobs per state (the queue-depth gauges).
    func countsByState() async throws -> [JobState: Int] {
        try await database.read { db in
            var counts: [JobState: Int] = [:]
            for row in try await db.raw("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").all() {
                if let state = JobState(rawValue: try row.decode(column: "state", as: String.self)) {
                    counts[state] = try row.decode(column: "n", as: Int.self)
                }
            }
            return counts
        }
    }

    /// The due time (Unix milliseconds) of the oldest job each queue could run now: waiting
    /// (`scheduled`, `available`, `retryable`) and due by `now`. Queues with none are absent.
    func oldestDue(now: Int64) async throws -> [String: Int64] {
        try await database.read { db in
            var oldest: [String: Int64] = [:]
            let rows = try await db.raw(
                """
                SELECT queue, MIN(run_at) AS oldest FROM jobs
                WHERE state IN \(Self.stateList(JobState.waiting)) AND run_at <= \(bind: now) GROUP BY queue
                """
            ).all()
            for row in rows {
                oldest[try row.decode(column: "queue", as: String.self)] = try row.decode(column: "oldest", as: Int64.self)
            }
            return oldest
        }
    }

    // MARK: Tenant-facing operations

    /// One job of a tenant.
    package func job(id: String, tenantId: String) async throws -> Job? {
        guard UUIDv7.isValid(id) else { return nil }
        return try await database.read { db in
            try await db.raw("SELECT \(unsafeRaw: Self.columns) FROM jobs WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)")
                .first().map(Self.job(from:))
        }
    }

    /// Jobs by id across tenants, for modules that react to job changes (the ids come from
    /// `JobEventHub.changes()`; callers keep results within each job's tenant).
    package func jobs(ids: [String]) async throws -> [Job] {
        let valid = ids.filter { UUIDv7.isValid($0) }
        guard !valid.isEmpty else { return [] }
        return try await database.read { db in
            var list: SQLQueryString = ""
            for (index, id) in valid.enumerated() { list = list + (index == 0 ? "" : ", ") + "\(bind: id)" }
            return try await db.raw("SELECT \(unsafeRaw: Self.columns) FROM jobs WHERE id IN (\(list))").all().map(Self.job(from:))
        }
    }

    // MARK: Status reporting

    /// Jobs by id across tenants with `statusVersion`, the version whose change a status
    /// consumer has reported (``markStatusReported(_:)``): a job with `statusVersion` ≥
    /// `job.version` has nothing new to report. For the job-status notifications, which keep
    /// results within each job's tenant. Ids that are no UUIDv7, or of no job, are left out.
    /// - Throws: database errors.
    package func jobsWithStatusVersion(ids: [String]) async throws -> [(job: Job, statusVersion: Int)] {
        let valid = ids.filter { UUIDv7.isValid($0) }
        var found: [(job: Job, statusVersion: Int)] = []
        // 500 binds a statement, well under both engines' limits.
        for chunk in valid.chunks(of: 500) {
            found += try await database.read { db in
                try await db.raw(
                    "SELECT \(unsafeRaw: Self.columns), status_version FROM jobs WHERE id IN (\(SQLList(chunk.map { SQLBind($0) })))"
                ).all().map(Self.jobWithStatusVersion(from:))
            }
        }
        return found
    }

    /// Up to `limit` jobs with a creator whose latest change is not reported yet (their
    /// `status_version` is below their `version`), in id order after `after` (keyset paging),
    /// each with its `statusVersion`. Read on the partial index of such rows, so the cost
    /// follows the backlog, not the table.
    /// - Throws: database errors.
    package func unreportedStatus(after: String?, limit: Int) async throws -> [(job: Job, statusVersion: Int)] {
        try await database.read { db in
            var query: SQLQueryString = """
                SELECT \(unsafeRaw: Self.columns), status_version FROM jobs WHERE created_by IS NOT NULL AND status_version < version
                """
            if let after { query = query + " AND id > \(bind: after)" }
            return try await db.raw(query + " ORDER BY id LIMIT \(bind: max(1, limit))").all().map(Self.jobWithStatusVersion(from:))
        }
    }

    /// Records that the changes of each job up to the given version are reported, in one
    /// statement per 300 jobs; a job already marked at that version or later (another node
    /// reported it) keeps its mark, so marks never go back.
    /// - Parameter versions: the version each job was read at, by job id.
    /// - Throws: database errors.
    package func markStatusReported(_ versions: [String: Int]) async throws {
        let entries = versions.sorted { $0.key < $1.key }
        for chunk in entries.chunks(of: 300) {
            var cases: SQLQueryString = "CASE id"
            for (id, version) in chunk { cases = cases + " WHEN \(bind: id) THEN \(bind: version)" }
            cases = cases + " END"
            try await database.write { [cases] db in
                try await db.raw(
                    """
                    UPDATE jobs SET status_version = \(cases)
                    WHERE id IN (\(SQLList(chunk.map { SQLBind($0.key) }))) AND status_version < \(cases)
                    """
                ).run()
            }
        }
    }

    /// A job and its `status_version`, from a row of `columns` then `status_version`.
    private static func jobWithStatusVersion(from row: any SQLRow) throws -> (job: Job, statusVersion: Int) {
        let positional = PositionalRow(row, columns: columnNames + ["status_version"])
        return (try job(from: positional), try positional.int(columnNames.count))
    }

    /// A page of a tenant's jobs, newest first.
    func list(tenantId: String, state: JobState?, kind: String?, page: PageRequest) async throws -> Page<Job> {
        let rows = try await database.read { db in
            var query: SQLQueryString = "SELECT \(unsafeRaw: Self.columns) FROM jobs WHERE tenant_id = \(bind: tenantId)"
            if let state { query = query + " AND state = \(bind: state.rawValue)" }
            if let kind { query = query + " AND kind = \(bind: kind)" }
            if let after = page.after { query = query + " AND id < \(bind: after)" }
            return try await db.raw(query + " ORDER BY id DESC LIMIT \(bind: page.limit + 1)").all()
        }
        return Page(fetched: try rows.map(Self.job(from:)), page: page, sortKey: \.id)
    }

    /// Sends a running attempt held by `node` back to wait until `until` without spending its
    /// attempt (``SnoozeJob``); due at `now` instead when ``wake(id:tenantId:now:)`` moved its
    /// `run_at` past `claimedRunAt` while it ran, so no wake-up is lost. A job whose
    /// cancellation was requested is cancelled. Returns false when the lease was lost.
    func snooze(id: String, node: String, claimedRunAt: Int64, until: Int64, now: Int64, abandoned: AbandonHook? = nil) async throws -> Bool {
        try await changing(abandoned: abandoned) { db in
            let snoozed = try await db.raw(
                """
                UPDATE jobs SET version = version + 1,
                    state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' WHEN run_at > \(bind: claimedRunAt) THEN 'available'
                        ELSE 'scheduled' END,
                    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE \(bind: now) END,
                    run_at = CASE WHEN run_at > \(bind: claimedRunAt) THEN \(bind: now) ELSE \(bind: until) END,
                    attempt = attempt - 1, lease_owner = NULL, lease_expires_at = NULL
                WHERE id = \(bind: id) AND lease_owner = \(bind: node) AND state = 'running'
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).first().map(Self.job(from:))
            return (snoozed != nil, snoozed.map { [$0] } ?? [])
        }
    }

    /// Makes a snoozed job due now; a running one is marked woken (its `run_at` moves to `now`)
    /// so that its snooze does not wait. Returns whether a job was changed.
    static func wake(id: String, tenantId: String, now: Int64, on db: any SQLDatabase) async throws -> Bool {
        try await db.raw(
            """
            UPDATE jobs SET version = version + 1,
                state = CASE WHEN state = 'scheduled' THEN 'available' ELSE state END,
                run_at = CASE WHEN state = 'scheduled' OR run_at < \(bind: now) THEN \(bind: now) ELSE run_at END
            WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND state IN ('scheduled', 'running')
            RETURNING id
            """
        ).first() != nil
    }

    /// Cancels waiting jobs among `ids` at once and flags running ones for their nodes to stop,
    /// on `db` (the caller's transaction); returns the jobs changed.
    static func requestCancel(ids: [String], tenantId: String, now: Int64, on db: any SQLDatabase) async throws -> [Job] {
        guard !ids.isEmpty else { return [] }
        return try await db.raw(
            """
            UPDATE jobs SET version = version + 1,
                state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
                finished_at = CASE WHEN state = 'running' THEN finished_at ELSE \(bind: now) END,
                cancel_requested_at = CASE WHEN state = 'running' THEN \(bind: now) ELSE cancel_requested_at END
            WHERE id IN (\(SQLList(ids.map { SQLBind($0) }))) AND tenant_id = \(bind: tenantId)
              AND state IN \(Self.stateList([.scheduled, .available, .retryable, .running]))
            RETURNING \(unsafeRaw: Self.columns)
            """
        ).all().map(Self.job(from:))
    }

    /// Cancels a waiting job at once, or flags a running one for its node to stop.
    func requestCancel(id: String, tenantId: String, now: Int64, abandoned: AbandonHook? = nil) async throws -> Job? {
        try await changing(abandoned: abandoned) { db in
            let job = try await db.raw(
                """
                UPDATE jobs SET version = version + 1,
                    state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
                    finished_at = CASE WHEN state = 'running' THEN finished_at ELSE \(bind: now) END,
                    cancel_requested_at = CASE WHEN state = 'running' THEN \(bind: now) ELSE cancel_requested_at END
                WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND state IN \(Self.stateList([.scheduled, .available, .retryable, .running]))
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).first().map(Self.job(from:))
            return (job, job.map { [$0] } ?? [])
        }
    }

    /// Puts a discarded or cancelled job back in the queue with a fresh set of attempts.
    func retry(id: String, tenantId: String, now: Int64) async throws -> Job? {
        try await database.write { db in
            try await db.raw(
                """
                UPDATE jobs SET version = version + 1, state = 'available', attempt = 0, run_at = \(bind: now), finished_at = NULL, cancel_requested_at = NULL
                WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND state IN ('discarded', 'cancelled')
                RETURNING \(unsafeRaw: Self.columns)
                """
            ).first().map(Self.job(from:))
        }
    }

    /// Deletes a finished job.
    func delete(id: String, tenantId: String) async throws -> Bool {
        try await database.write { db in
            try await db.raw(
                "DELETE FROM jobs WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND state IN ('succeeded', 'cancelled', 'discarded') RETURNING id"
            ).first() != nil
        }
    }
}
