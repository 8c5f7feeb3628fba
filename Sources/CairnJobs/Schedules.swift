package import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
package import Hummingbird
package import Logging
package import SQLKit
import ServiceLifecycle

/// A recurring job: a cron expression in a time zone, and the job it enqueues.
///
/// As JSON: `{id, name, cron, timeZone, kind, args, enabled, nextRunAt, lastRunAt, createdBy, createdAt, updatedAt, managedBy}`.
@JSONObject
package struct Schedule: Sendable, Versioned, JSONWritable {
    /// UUIDv7.
    package var id: String
    /// Owning tenant.
    @JSONSkip package var tenantId: String
    /// Display name.
    package var name: String
    /// The cron expression.
    package var cron: String
    /// IANA time zone name.
    package var timeZone: String
    /// Job kind to enqueue.
    package var kind: String
    /// Job arguments, JSON text.
    @JSONText package var args: String
    /// Paused when false.
    package var enabled: Bool
    /// The next occurrence (epoch ms), nil when the expression never fires again.
    @JSONTimestamp package var nextRunAt: Int64?
    /// The last occurrence that enqueued a job (epoch ms).
    @JSONTimestamp package var lastRunAt: Int64?
    /// Creator.
    package var createdBy: String?
    /// Epoch ms.
    @JSONTimestamp package var createdAt: Int64
    /// Epoch ms.
    @JSONTimestamp package var updatedAt: Int64
    /// Row version, the `ETag`.
    @JSONSkip package var version: Int
    /// The resource that owns the schedule (`/pipelines/{id}`), which alone may change or delete
    /// it; nil for a schedule `/schedules` manages. Derived from the kind, not stored.
    package var managedBy: String? = nil

    static let columns =
        "id, tenant_id, name, cron, time_zone, kind, args, enabled, next_run_at, last_run_at, created_by, created_at, updated_at, version"

    static func from(_ row: any SQLRow) throws -> Schedule {
        Schedule(
            id: try row.decode(column: "id", as: String.self), tenantId: try row.decode(column: "tenant_id", as: String.self),
            name: try row.decode(column: "name", as: String.self), cron: try row.decode(column: "cron", as: String.self),
            timeZone: try row.decode(column: "time_zone", as: String.self), kind: try row.decode(column: "kind", as: String.self),
            args: try row.decode(column: "args", as: String.self), enabled: try row.decode(column: "enabled", as: Bool.self),
            nextRunAt: try row.decode(column: "next_run_at", as: Int64?.self), lastRunAt: try row.decode(column: "last_run_at", as: Int64?.self),
            createdBy: try row.decode(column: "created_by", as: String?.self), createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self), version: try row.decode(column: "version", as: Int.self))
    }

    /// The next occurrence strictly after `instant` (epoch ms), or nil.
    static func next(cron: CronExpression, zone: TimeZone, after instant: Int64) -> Int64? {
        cron.nextOccurrence(after: Date(timeIntervalSince1970: Double(instant) / 1000), in: zone)
            .map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
    }
}

extension Schedule {
    /// True when `other` has the same settings and next run: saving would change nothing.
    func hasSameSettings(as other: Schedule) -> Bool {
        name == other.name && cron == other.cron && timeZone == other.timeZone && kind == other.kind
            && JSONValue(text: args) == JSONValue(text: other.args) && enabled == other.enabled && nextRunAt == other.nextRunAt
    }
}

/// Fires due schedules: each occurrence enqueues exactly one job, however many nodes run.
///
/// A due row is taken with `FOR UPDATE SKIP LOCKED` (PostgreSQL; the single writer on SQLite),
/// its job enqueued in the same transaction with the unique key `schedule:<id>:<occurrence>`,
/// and `next_run_at` moved past now. After downtime the missed occurrences fire once, not once
/// per missed slot.
package final class Scheduler: Service, Sendable {
    let queue: JobQueue
    let logger: Logger
    let interval: Duration

    /// Creates the scheduler; it looks for due schedules every `interval`.
    package init(queue: JobQueue, logger: Logger, interval: Duration = .milliseconds(500)) {
        self.queue = queue
        self.logger = logger
        self.interval = interval
    }

    /// Runs until graceful shutdown.
    package func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    while try await self.fireDue() > 0 {}
                } catch is CancellationError {
                    return
                } catch {
                    self.logger.warning("firing schedules failed", metadata: ["error": .string(String(describing: error).prefix(200).description)])
                }
                try await Task.sleep(for: self.interval)
            }
        }
    }

    /// Fires up to 50 due schedules; returns how many fired.
    @discardableResult
    func fireDue() async throws -> Int {
        let database = queue.store.database
        let now = queue.clock.milliseconds
        let queue = self.queue
        return try await database.transaction { db in
            var query: SQLQueryString =
                "SELECT \(unsafeRaw: Schedule.columns) FROM schedules WHERE enabled AND next_run_at <= \(bind: now) ORDER BY next_run_at LIMIT 50"
            if database.dialect == .postgres { query = query + " FOR UPDATE SKIP LOCKED" }
            let due = try await db.raw(query).all().map(Schedule.from)
            for schedule in due {
                guard let occurrence = schedule.nextRunAt, let cron = try? CronExpression(schedule.cron),
                    let zone = TimeZone(identifier: schedule.timeZone)
                else { continue }
                var request = JobRequest(kind: schedule.kind, args: JSONValue(text: schedule.args) ?? .object([:]))
                request.uniqueKey = "schedule:\(schedule.id):\(occurrence)"
                do {
                    _ = try await queue.enqueue(request, tenantId: schedule.tenantId, createdBy: schedule.createdBy, on: db)
                } catch let error as AppError where error.code == .rateLimited || error.code == .invalidInput {
                    self.logger.warning(
                        "schedule skipped an occurrence", metadata: ["schedule_id": .string(schedule.id), "code": .string(error.code.rawValue)])
                }
                let next = Schedule.next(cron: cron, zone: zone, after: max(now, occurrence))
                try await db.raw(
                    """
                    UPDATE schedules SET next_run_at = \(bind: next), last_run_at = \(bind: occurrence), version = version + 1
                    WHERE id = \(bind: schedule.id) AND next_run_at = \(bind: occurrence)
                    """
                ).run()
            }
            return due.count
        }
    }
}

/// `/schedules`: create, list, read, update and delete recurring jobs (admins).
package struct SchedulesController: Sendable {
    let queue: JobQueue

    /// Creates the controller.
    package init(queue: JobQueue) {
        self.queue = queue
    }

    struct Body: Decodable {
        var name: String?
        var cron: String?
        var timeZone: String?
        var kind: String?
        var args: JSONValue?
        var enabled: Bool?
    }

    /// Validates the fields given; returns the parsed cron and zone.
    func validate(_ body: Body, requireAll: Bool) throws -> (CronExpression?, TimeZone?) {
        var issues: [FieldIssue] = []
        if requireAll {
            for (field, present) in [("name", body.name != nil), ("cron", body.cron != nil), ("kind", body.kind != nil)] where !present {
                issues.append(FieldIssue(field: field, issue: "is required"))
            }
        }
        if let name = body.name, !(1...100).contains(TextSafety.length(name.trimmingCharacters(in: .whitespaces))) {
            issues.append(FieldIssue(field: "name", issue: "must be 1 to 100 characters"))
        }
        var cron: CronExpression?
        if let text = body.cron {
            do { cron = try CronExpression(text) } catch let error as AppError { issues += error.errors }
        }
        var zone: TimeZone?
        if let identifier = body.timeZone {
            zone = identifier.isEmpty || identifier.count > 64 ? nil : TimeZone(identifier: identifier)
            if zone == nil { issues.append(FieldIssue(field: "timeZone", issue: "must be an IANA time zone such as Europe/Paris")) }
        }
        if let kind = body.kind, let owned = queue.registration(kind)?.schedules {
            issues.append(FieldIssue(field: "kind", issue: "is scheduled through its owner, not /schedules: \(owned.place)"))
        } else if let kind = body.kind, queue.registration(kind)?.enqueueableOverHTTP != true {
            issues.append(FieldIssue(field: "kind", issue: "is not a job kind that can be scheduled"))
        }
        if let args = body.args, case .object = args {
        } else if body.args != nil {
            issues.append(FieldIssue(field: "args", issue: "must be a JSON object"))
        }
        if let args = body.args, args.text.utf8.count > 64 * 1024 {
            issues.append(FieldIssue(field: "args", issue: "must be at most 64 KiB of JSON"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
        return (cron, zone)
    }

    /// Checks the arguments a schedule's jobs will carry against their kind (``JobArguments/issues(in:)``),
    /// and that the schedule fires at all in its zone, so neither fails only when it fires.
    /// - Throws: 400 `invalid_input` naming `args.…` or `cron`.
    func check(kind: String, args: JSONValue, cron: CronExpression, zone: TimeZone, now: Int64) throws {
        var issues = queue.registration(kind)?.check(args) ?? []
        if Schedule.next(cron: cron, zone: zone, after: now) == nil {
            issues.append(FieldIssue(field: "cron", issue: "never fires in \(zone.identifier)"))
        }
        if !issues.isEmpty { throw AppError.invalidInput(issues) }
    }

    /// Adds the routes to the authenticated group, all for owners and admins.
    package func addRoutes(to group: RouterGroup<AuthenticatedContext>) {
        group.group("schedules").add(middleware: RequireAdmin())
            .resource(list: list, create: create, show: show, update: update, delete: delete)
    }

    /// `POST /schedules`: 201 with `Location` and `ETag`.
    /// - Throws: 400 `invalid_input`; 409 `conflict` when the tenant has its most schedules
    ///   (``JobsSettings/maxSchedulesPerTenant``).
    @Sendable func create(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let database = queue.store.database
        var request = request
        let now = queue.clock.milliseconds
        let body = try await request.decodeJSON(as: Body.self, context: context) { body in
            var issues = fieldIssues { _ = try validate(body, requireAll: true) }
            // The arguments and the firing are checked with the other fields when they can be.
            let cron = body.cron.flatMap { try? CronExpression($0) }
            let zone = body.timeZone.map { TimeZone(identifier: $0) } ?? TimeZone(identifier: "UTC")
            if let kind = body.kind, queue.registration(kind)?.enqueueableOverHTTP == true, let cron, let zone {
                issues += fieldIssues { try check(kind: kind, args: body.args ?? .object([:]), cron: cron, zone: zone, now: now) }
            }
            return issues
        }
        let (cron, zone) = try validate(body, requireAll: true)
        let timeZone = zone ?? TimeZone(identifier: "UTC")!
        try check(kind: body.kind!, args: body.args ?? .object([:]), cron: cron!, zone: timeZone, now: now)
        let schedule = Schedule(
            id: UUIDv7.make(), tenantId: context.identity.tenantId, name: body.name!.trimmingCharacters(in: .whitespaces), cron: body.cron!,
            timeZone: body.timeZone ?? "UTC", kind: body.kind!, args: (body.args ?? .object([:])).text, enabled: body.enabled ?? true,
            nextRunAt: Schedule.next(cron: cron!, zone: timeZone, after: now), lastRunAt: nil, createdBy: context.identity.userId,
            createdAt: now, updatedAt: now, version: 1)
        try await database.transaction { [queue] db in
            try await queue.checkScheduleLimit(tenantId: schedule.tenantId, adding: schedule.id, on: db)
            try await db.raw(
                """
                INSERT INTO schedules (\(unsafeRaw: Schedule.columns)) VALUES (\(bind: schedule.id), \(bind: schedule.tenantId),
                    \(bind: schedule.name), \(bind: schedule.cron), \(bind: schedule.timeZone), \(bind: schedule.kind), \(bind: schedule.args),
                    \(bind: schedule.enabled), \(bind: schedule.nextRunAt), NULL, \(bind: schedule.createdBy), \(bind: now), \(bind: now), 1)
                """
            ).run()
        }
        return .versioned(schedule, status: .created, location: "/schedules/\(schedule.id)")
    }

    /// `GET /schedules`: a page of the tenant's schedules, newest first.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let database = queue.store.database
        let page = try PageRequest.parse(request.uri, validateKey: UUIDv7.isValid)
        let tenantId = context.identity.tenantId
        let rows = try await database.read { db in
            var query: SQLQueryString = "SELECT \(unsafeRaw: Schedule.columns) FROM schedules WHERE tenant_id = \(bind: tenantId)"
            if let after = page.after { query = query + " AND id < \(bind: after)" }
            return try await db.raw(query + " ORDER BY id DESC LIMIT \(bind: page.limit + 1)").all()
        }
        return .json(Page(fetched: try rows.map { owned(try Schedule.from($0)) }, page: page, sortKey: \.id))
    }

    /// `GET /schedules/{id}`, with `If-None-Match` → 304.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        ETag.conditional(request, try await load(try context.parameters.require("id"), tenantId: context.identity.tenantId))
    }

    /// `PATCH /schedules/{id}` (`If-Match` optional): a new cron, zone or re-enabling moves the
    /// next run. A change that changes nothing (`{}`, or the stored values again) writes
    /// nothing: `version`, `ETag` and `updatedAt` stay.
    /// - Throws: 400 `invalid_input`; 404; 409 `managed_by_owner` for a schedule another
    ///   resource owns; 412 when `If-Match` (or a concurrent change) differs.
    @Sendable func update(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let expected = try ETag.expectedVersion(request)
        var request = request
        let body = try await request.decodeJSON(as: Body.self, context: context) { body in
            fieldIssues { _ = try validate(body, requireAll: false) }
        }
        let (newCron, newZone) = try validate(body, requireAll: false)
        let current = try await changeable(try context.parameters.require("id"), tenantId: context.identity.tenantId, expected: expected)
        let now = queue.clock.milliseconds
        let updated = try applying(body, cron: newCron, zone: newZone, to: current, now: now)
        if updated.hasSameSettings(as: current) { return .versioned(current) }
        guard try await save(updated, replacing: current, now: now) else { throw AppError.preconditionFailed() }
        return .versioned(updated)
    }

    /// `current` with the fields of `body` (validated: `cron` and `zone` parsed) applied, its
    /// arguments checked against its kind when they or the firing change, and its next run
    /// moved when the cron, the zone or re-enabling asks for it; one version later.
    /// - Throws: 400 `invalid_input` naming `args.…` or `cron`.
    private func applying(_ body: Body, cron newCron: CronExpression?, zone newZone: TimeZone?, to current: Schedule, now: Int64) throws
        -> Schedule
    {
        var updated = current
        updated.name = body.name?.trimmingCharacters(in: .whitespaces) ?? current.name
        updated.cron = body.cron ?? current.cron
        updated.timeZone = newZone == nil ? current.timeZone : (body.timeZone ?? current.timeZone)
        updated.kind = body.kind ?? current.kind
        updated.args = body.args?.text ?? current.args
        updated.enabled = body.enabled ?? current.enabled
        let cron = try newCron ?? CronExpression(updated.cron)
        let zone = TimeZone(identifier: updated.timeZone)!
        if newCron != nil || newZone != nil || body.kind != nil || body.args != nil {
            try check(kind: updated.kind, args: JSONValue(text: updated.args) ?? .object([:]), cron: cron, zone: zone, now: now)
        }
        if newCron != nil || newZone != nil || (body.enabled == true && !current.enabled) {
            updated.nextRunAt = Schedule.next(cron: cron, zone: zone, after: now)
        }
        updated.updatedAt = now
        updated.version = current.version + 1
        return updated
    }

    /// Writes `change` over `current` if nobody changed it since it was read.
    private func save(_ change: Schedule, replacing current: Schedule, now: Int64) async throws -> Bool {
        try await queue.store.database.write { db in
            try await db.raw(
                """
                UPDATE schedules SET name = \(bind: change.name), cron = \(bind: change.cron), time_zone = \(bind: change.timeZone),
                    kind = \(bind: change.kind), args = \(bind: change.args), enabled = \(bind: change.enabled),
                    next_run_at = \(bind: change.nextRunAt), updated_at = \(bind: now), version = version + 1
                WHERE id = \(bind: current.id) AND tenant_id = \(bind: current.tenantId) AND version = \(bind: current.version)
                RETURNING id
                """
            ).first() != nil
        }
    }

    /// `DELETE /schedules/{id}` (`If-Match` optional).
    /// - Throws: 404; 409 `managed_by_owner` for a schedule another resource owns; 412.
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let expected = try ETag.expectedVersion(request)
        let current = try await changeable(try context.parameters.require("id"), tenantId: context.identity.tenantId, expected: expected)
        try await queue.store.database.write { db in
            try await db.raw("DELETE FROM schedules WHERE id = \(bind: current.id) AND tenant_id = \(bind: current.tenantId)").run()
        }
        return Response(status: .noContent)
    }

    /// The tenant's schedule `id`, with its owner (`managedBy`).
    /// - Throws: 404 when it does not exist or is another tenant's.
    private func load(_ id: String, tenantId: String) async throws -> Schedule {
        guard UUIDv7.isValid(id) else { throw AppError.notFound("No such schedule.") }
        let row = try await queue.store.database.read { db in
            try await db.raw("SELECT \(unsafeRaw: Schedule.columns) FROM schedules WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)").first()
        }
        guard let row else { throw AppError.notFound("No such schedule.") }
        return owned(try Schedule.from(row))
    }

    /// The tenant's schedule `id`, when `/schedules` may change it and it is at the version
    /// `expected` (any when nil).
    /// - Throws: 404; 409 `managed_by_owner` naming the owner, for a schedule another resource
    ///   owns (a pipeline's, whose arguments name the pipeline: changed here, they would run
    ///   another pipeline, or another tenant's); 412.
    private func changeable(_ id: String, tenantId: String, expected: Int?) async throws -> Schedule {
        let schedule = try await load(id, tenantId: tenantId)
        if let owner = schedule.managedBy {
            let place = queue.registration(schedule.kind)?.schedules?.place ?? owner
            throw AppError(
                .conflict, code: .managedByOwner,
                detail: "This schedule belongs to \(owner) and changes only with it: use \(place).")
        }
        if let expected, expected != schedule.version { throw AppError.preconditionFailed() }
        return schedule
    }

    /// `schedule` with `managedBy` set when its kind's schedules belong to another resource.
    private func owned(_ schedule: Schedule) -> Schedule {
        guard let ownership = queue.registration(schedule.kind)?.schedules else { return schedule }
        var schedule = schedule
        schedule.managedBy = ownership.owner(JSONValue(text: schedule.args) ?? .object([:]))
        return schedule
    }
}

extension JobQueue {
    /// Creates or replaces the schedule `id` for work another module owns (a pipeline's
    /// schedule, say), on `db` — the caller's transaction, so the schedule and the caller's row
    /// commit together. The schedule then fires like any other: one job of `Arguments.kind`
    /// carrying `job` per occurrence.
    /// - Throws: 400 `invalid_input` for a bad cron expression or time zone; 409 `conflict` for a
    ///   new schedule of a tenant that has its most (``JobsSettings/maxSchedulesPerTenant``);
    ///   the database's error.
    package func putSchedule<Arguments: JobArguments>(
        id: String, tenantId: String, name: String, cron: String, timeZone: String, job: Arguments, createdBy: String?, on db: any SQLDatabase
    ) async throws {
        let kind = Arguments.kind
        let args = try job.jsonValue()
        let expression = try CronExpression(cron)
        guard let zone = TimeZone(identifier: timeZone) else { throw AppError.invalidField("timeZone", "must be an IANA time zone") }
        let now = clock.milliseconds
        let next = Schedule.next(cron: expression, zone: zone, after: now)
        try await checkScheduleLimit(tenantId: tenantId, adding: id, on: db)
        try await db.raw(
            """
            INSERT INTO schedules (\(unsafeRaw: Schedule.columns)) VALUES (\(bind: id), \(bind: tenantId), \(bind: name), \(bind: cron),
                \(bind: timeZone), \(bind: kind), \(bind: args.text), \(bind: true), \(bind: next), NULL, \(bind: createdBy), \(bind: now),
                \(bind: now), 1)
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, cron = excluded.cron, time_zone = excluded.time_zone,
                kind = excluded.kind, args = excluded.args, enabled = excluded.enabled, next_run_at = excluded.next_run_at,
                updated_at = excluded.updated_at, version = schedules.version + 1
            """
        ).run()
    }

    /// Refuses to add the schedule `id` to the tenant's (a new one, or one replacing itself)
    /// when the tenant's other schedules, its pipelines' included, already number
    /// ``JobsSettings/maxSchedulesPerTenant``. Runs on `db`, the transaction that then writes
    /// the schedule, holding the tenant's schedule lock there on PostgreSQL so that schedules
    /// created at once on several nodes cannot pass the limit together (SQLite has one writer).
    /// - Throws: 409 `conflict` naming the limit.
    func checkScheduleLimit(tenantId: String, adding id: String, on db: any SQLDatabase) async throws {
        if store.database.dialect == .postgres {
            try await db.raw("SELECT pg_advisory_xact_lock(\(bind: Self.scheduleLockKey(tenantId: tenantId)))").run()
        }
        let others =
            try await db.raw("SELECT COUNT(*) AS n FROM schedules WHERE tenant_id = \(bind: tenantId) AND id <> \(bind: id)").first()?
            .decode(column: "n", as: Int.self) ?? 0
        let limit = settings.maxSchedulesPerTenant
        if others >= limit {
            throw AppError.conflict(
                "The tenant already has \(limit) schedules (its pipelines' included), the most it may have; delete one first.")
        }
    }

    /// The advisory-lock key of a tenant's schedules: FNV-1a of `schedules:<tenant>`, folded to 63 bits.
    static func scheduleLockKey(tenantId: String) -> Int64 {
        Database.lockKey("schedules:" + tenantId)
    }

    /// Deletes the schedule `id` of the tenant on `db`; a missing one is not an error.
    package func deleteSchedule(id: String, tenantId: String, on db: any SQLDatabase) async throws {
        try await db.raw("DELETE FROM schedules WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId)").run()
    }

    /// The next time the schedule `id` fires (epoch ms), or nil when it is missing or disabled.
    package func nextRun(scheduleId id: String, tenantId: String) async throws -> Int64? {
        try await store.database.read { db in
            try await db.raw("SELECT next_run_at FROM schedules WHERE id = \(bind: id) AND tenant_id = \(bind: tenantId) AND enabled").first()
        }?.decode(column: "next_run_at", as: Int64?.self)
    }
}
