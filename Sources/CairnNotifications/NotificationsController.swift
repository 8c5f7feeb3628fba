import CairnAccounts
package import CairnHTTP
import CairnJobs
import CairnStorage
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization

/// `/notifications`: publish (admins and service tokens), the caller's inbox, read state, and the live
/// Server-Sent Events stream. Every read is scoped to the caller's tenant and user: another
/// user's notification answers 404.
@MemberwiseInit
package struct NotificationsController: Sendable {
    let center: Notifier
    /// Runs tenant broadcasts as jobs.
    let broadcasts: TenantBroadcasts

    struct PublishBody: Decodable, ValueChecked {
        var userIds: [String]?
        var audience: String?
        var type: String
        var title: String
        var body: String?
        var data: JSONValue?

        /// `"data": null` is refused: stored as `{}` it would not be what was sent.
        static var nonNullMembers: [String: String] { ["data": "must be a JSON object (leave it out for none)"] }

        var draft: NotificationDraft { NotificationDraft(type: type, title: title, body: body ?? "", data: data ?? .object([:])) }

        /// Everything `publish` checks that needs no database: the draft, the reserved types, and
        /// the recipients' shape.
        func valueIssues() -> [FieldIssue] {
            var issues = issues { try draft.validate() }
            if NotificationDraft.isValidType(type), NotificationDraft.serverTypes.contains(type) {
                issues.append(FieldIssue(field: "type", issue: NotificationsController.reservedTypeIssue))
            }
            switch (userIds, audience) {
            case (let userIds?, nil):
                if !(1...1000).contains(userIds.count) { issues.append(FieldIssue(field: "userIds", issue: "must list 1 to 1000 user ids")) }
                for (index, id) in userIds.enumerated() where !UUIDv7.isValid(id) {
                    issues.append(FieldIssue(field: "userIds[\(index)]", issue: NotificationsController.malformedUserIdIssue))
                }
            case (nil, "tenant"?): break
            case (nil, _?): issues.append(FieldIssue(field: "audience", issue: "must be \"tenant\""))
            default: issues.append(FieldIssue(field: "userIds", issue: "give either userIds or audience, not both or neither"))
            }
            return issues
        }
    }

    /// The issue of a recipient that is no user id at all (not "not a user of this tenant": its
    /// shape, not the tenant, is at fault).
    static let malformedUserIdIssue = "is not a user id (a UUIDv7 string)"
    /// The issue of a well-formed recipient id that is no user of the publisher's tenant.
    static let notAMemberIssue = "is not a user of this tenant"

    /// The issue of a publisher's notification with one of the server's own types.
    static let reservedTypeIssue = "is reserved for the server's own notifications (job_status, system_alert)"

    struct ReadAllBody: Decodable {
        var upToSeq: Int64?
    }

    /// Adds the routes. `POST /notifications` is for owners, admins and service tokens with the
    /// scope `notifications:publish`, and honours `Idempotency-Key`; the SSE stream also takes
    /// the access token as `?access_token=` (RFC 6750 §2.3), because a browser's `EventSource`
    /// cannot send an `Authorization` header; the rest is the caller's own inbox.
    package func addRoutes(to routes: RouteGroups, idempotency: IdempotencyMiddleware) {
        routes.authenticated("notifications", accepting: .serviceTokens(scope: ServiceTokenScope.notificationsPublish))
            .add(middleware: RequireAdmin(orScope: ServiceTokenScope.notificationsPublish))
            .add(middleware: idempotency)
            .post(use: publish)
        routes.authenticated("notifications", accepting: .queryToken)
            .get("stream", use: stream)
        routes.authenticated("notifications")
            .resource(list: list, show: show, delete: delete)
            .get("unread-count", use: unreadCount)
            .post("read-all", use: readAll)
            .post(":id/read", use: markRead)
    }

    /// `POST /notifications`. To `userIds` it stores the rows before answering 202
    /// `{ids, count}`; to `audience: "tenant"` it enqueues a ``TenantBroadcasts`` job and
    /// answers 202 `{broadcastId, job}` with `Location: /jobs/{id}` at once.
    /// - Throws: 400 `invalid_input` for a bad draft, including one of the server's own types
    ///   (``NotificationDraft/serverTypes``).
    @Sendable func publish(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        var request = request
        // Decoding checked the draft and refused the server's own types (`PublishBody.valueIssues`).
        let body = try await request.decodeJSON(as: PublishBody.self, context: context)
        let draft = body.draft
        let tenantId = context.identity.tenantId
        switch (body.userIds?.map(UUIDv7.normalized), body.audience) {
        case (let userIds?, nil):
            guard (1...1000).contains(userIds.count) else { throw AppError.invalidField("userIds", "must list 1 to 1000 user ids") }
            if let index = userIds.firstIndex(where: { !UUIDv7.isValid($0) }) {
                throw AppError.invalidField("userIds[\(index)]", Self.malformedUserIdIssue)
            }
            do {
                let stored = try await center.publish(draft, to: userIds, tenantId: tenantId, checkingMembership: true)
                return .json(PublishResult(ids: stored.map(\.id)), status: .accepted)
            } catch let error as NotTenantMembers {
                // Every recipient at fault, at each index it is listed at, in one answer.
                let indices = userIds.indices.filter { error.userIds.contains(userIds[$0]) }
                throw AppError.invalidInput(
                    (indices.isEmpty ? [0] : indices).map { FieldIssue(field: "userIds[\($0)]", issue: Self.notAMemberIssue) })
            }
        case (nil, "tenant"?):
            // A service token is no user: nobody gets the job's status notifications.
            let createdBy = context.identity.isServiceToken ? nil : context.identity.userId
            let started = try await broadcasts.start(draft, tenantId: tenantId, createdBy: createdBy)
            return .json(
                BroadcastAccepted(broadcastId: started.broadcastId, job: started.job), status: .accepted,
                headers: [.location: "/jobs/\(started.job.id)"])
        case (nil, _?):
            throw AppError.invalidField("audience", "must be \"tenant\"")
        default:
            throw AppError.invalidInput([FieldIssue(field: "userIds", issue: "give either userIds or audience, not both or neither")])
        }
    }

    /// `GET /notifications[?unread=&type=]`: a page of the caller's inbox, newest first.
    @Sendable func list(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let page = try PageRequest.parse(request.uri, validateKey: { Int64($0).map { $0 > 0 } ?? false })
        let query = request.uri.queryParameters
        var unreadOnly = false
        if let raw = query.get("unread") {
            switch raw {
            case "true": unreadOnly = true
            case "false": unreadOnly = false
            default: throw AppError.invalidField("unread", "must be true or false")
            }
        }
        let type = query.get("type").map { String($0) }
        if let type, !NotificationDraft.isValidType(type) { throw AppError.invalidField("type", "must match [a-z][a-z0-9_.]{0,63}") }
        return .json(
            try await center.store.list(
                tenantId: context.identity.tenantId, userId: context.identity.userId, unreadOnly: unreadOnly, type: type, page: page))
    }

    /// `GET /notifications/unread-count`.
    @Sendable func unreadCount(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        .json(Count(key: "unread", value: try await center.store.unreadCount(tenantId: context.identity.tenantId, userId: context.identity.userId)))
    }

    /// `POST /notifications/read-all`: everything, or everything up to `upToSeq`.
    @Sendable func readAll(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        // The body is optional: none (or an empty one) marks everything read.
        var upToSeq: Int64?
        var request = request
        let buffer = try await request.collectBody(context: context)
        if buffer.readableBytes > 0 {
            guard Request.isJSON(request.headers[.contentType] ?? "") else {
                throw AppError(.unsupportedMediaType, code: .unsupportedMediaType, detail: "Send the body as application/json.")
            }
            upToSeq = try Request.decodeJSON(ReadAllBody.self, from: buffer).upToSeq
            if let upToSeq, upToSeq < 0 { throw AppError.invalidField("upToSeq", "must be 0 or more") }
        }
        let count = try await center.store.markAllRead(
            tenantId: context.identity.tenantId, userId: context.identity.userId, upToSeq: upToSeq, now: center.clock.milliseconds)
        return .json(Count(key: "updated", value: count))
    }

    /// `GET /notifications/{id}`: one of the caller's notifications.
    @Sendable func show(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard
            let item = try await center.store.notification(
                id: try context.parameters.require("id"), tenantId: context.identity.tenantId, userId: context.identity.userId)
        else { throw AppError.notFound("No such notification.") }
        return .json(item)
    }

    /// `POST /notifications/{id}/read`.
    @Sendable func markRead(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard
            let item = try await center.store.markRead(
                id: try context.parameters.require("id"), tenantId: context.identity.tenantId, userId: context.identity.userId,
                now: center.clock.milliseconds)
        else { throw AppError.notFound("No such notification.") }
        return .json(item)
    }

    /// `DELETE /notifications/{id}`.
    @Sendable func delete(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        guard
            try await center.store.delete(
                id: try context.parameters.require("id"), tenantId: context.identity.tenantId, userId: context.identity.userId)
        else { throw AppError.notFound("No such notification.") }
        return Response(status: .noContent)
    }

    /// The Bearer token of a request that passed the Bearer middleware.
    static func bearer(_ request: Request) -> String? {
        guard let header = request.headers[.authorization], let space = header.firstIndex(of: " ") else { return nil }
        return header[header.index(after: space)...].trimmingCharacters(in: .whitespaces)
    }

    /// Parses a seq cursor (`Last-Event-ID`, `?since=`, `subscribe.since`): 0 or more.
    static func parseSeq(_ text: String?, field: String) throws -> Int64? {
        guard let text else { return nil }
        guard let value = Int64(text.trimmingCharacters(in: .whitespaces)), value >= 0 else {
            throw AppError.invalidField(field, "must be a sequence number (0 or more)")
        }
        return value
    }

    /// `GET /notifications/stream`: Server-Sent Events (WHATWG HTML §9.2). Each event is
    /// `id: <seq>`, `event: notification`, `data: <notification JSON>`. With `Last-Event-ID`
    /// (or `?since=`) every stored notification after that seq is replayed first, then live
    /// ones follow with no gap and no duplicate: the live subscription is registered before
    /// the backlog is read, and events are de-duplicated and gap-checked by seq. Without
    /// either, the stream starts at the present. A `: heartbeat` comment is sent when nothing
    /// was written for `heartbeat` (15 s); `retry: 3000` advises the reconnect delay. The
    /// stream ends on server shutdown, when the access token expires, or within seconds of
    /// the user's sessions being revoked. The access token comes in the `Authorization` header
    /// or, for browsers' `EventSource`, as `?access_token=` (RFC 6750 §2.3). A client that stops
    /// reading holds at most its mailbox (an overflow falls back to re-reading) plus the send
    /// buffers, and once a write has waited `writeTimeout` (10 s) the connection is closed.
    @Sendable func stream(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let since =
            try Self.parseSeq(request.headers[HTTPField.Name("Last-Event-ID")!], field: "Last-Event-ID")
            ?? Self.parseSeq(request.uri.queryParameters.get("since").map { String($0) }, field: "since")
        // The Bearer middleware took the token from exactly one of these (RFC 6750 §2.1, §2.3).
        let fromQuery = request.headers[.authorization] == nil
        guard let token = fromQuery ? BearerMiddleware.queryToken(request) : Self.bearer(request) else {
            throw AppError.unauthorized(code: .unauthorized, detail: "", invalidToken: false)
        }
        let expiresAt = Date(timeIntervalSince1970: try await center.accounts.tokens.verify(token).exp)
        // Token checks allow a little clock skew; a stream would end at once on a token already
        // past its expiry, so say why instead (an EventSource would retry it silently).
        guard expiresAt > center.clock.now else {
            throw AppError.unauthorized(code: .tokenExpired, detail: "The access token has expired.", invalidToken: true)
        }
        guard let slot = center.hub.reserve(tenantId: context.identity.tenantId, userId: context.identity.userId) else {
            throw Self.tooManyConnections(center.hub.maxUserConnections)
        }
        let body = eventStream(identity: context.identity, token: token, since: since, expiresAt: expiresAt, channel: context.channel, slot: slot)
        return Response(
            status: .ok,
            // RFC 6750 §2.3: a response to a request with the token in its URI is `private`.
            headers: [
                .contentType: "text/event-stream", .cacheControl: fromQuery ? "no-cache, private" : "no-cache",
                HTTPField.Name("X-Accel-Buffering")!: "no",
            ],
            body: body)
    }

    /// 429 `rate_limited` for a user already holding `maximum` live connections on this node.
    static func tooManyConnections(_ maximum: Int) -> AppError {
        var error = AppError.rateLimited(
            retryAfter: 5, policy: "\(maximum)",
            detail: "This user already holds \(maximum) live connections (streams and WebSockets) on this node; close one first.")
        // A limit on connections held, not on requests in a window: no window to announce.
        error.headers[HTTPField.Name("RateLimit-Policy")!] = nil
        error.headers[HTTPField.Name("RateLimit")!] = nil
        return error
    }

    /// The body of `GET /notifications/stream` for `identity`, from `since` (or the present),
    /// until shutdown, the token's expiry at `expiresAt`, or the revocation of `token`; it
    /// holds the user's live-connection `slot` until it ends.
    func eventStream(identity: Identity, token: String, since: Int64?, expiresAt: Date, channel: any Channel, slot: LiveSlot) -> ResponseBody {
        let center = self.center
        return ResponseBody { writer in
            let mailbox = Self.makeMailbox(center: center, channel: channel)
            center.hub.register(mailbox, tenantId: identity.tenantId, userId: identity.userId, transport: .sse)
            defer { center.hub.unregister(mailbox, tenantId: identity.tenantId, userId: identity.userId, transport: .sse) }
            // Given back before the connection count drops, so whoever waits for that finds it free.
            defer { slot.release() }
            var stream = NotificationEventStream(center: center, identity: identity, token: token, expiresAt: expiresAt, mailbox: mailbox)
            try await withGracefulShutdownHandler {
                try await stream.open(since: since, writer: &writer)
                try await stream.runLive(writer: &writer)
            } onGracefulShutdown: {
                mailbox.close()
            }
            try await mailbox.writing { try await writer.finish(nil) }
        }
    }

    /// The hub mailbox of one SSE connection; a write that waits past the write timeout closes
    /// the connection (and counts a slow consumer).
    static func makeMailbox(center: Notifier, channel: any Channel) -> Mailbox {
        // The body's task, parked in a write, fails only when the channel closes; the error then
        // ends the response like any failed write.
        Mailbox(capacity: center.settings.mailboxCapacity, writeTimeout: center.settings.writeTimeout) { _ in
            center.logger.warning("closing a stalled event stream: a write waited past the write timeout")
            Counter(label: "cairn_notifications_slow_consumers_total", dimensions: [("transport", "sse")]).increment()
            channel.close(promise: nil)
        }
    }

    static func writeEvent(_ row: StoredNotification, to buffer: inout ByteBuffer) {
        var json = JSONWriter(capacity: 256 + row.data.utf8.count + row.body.utf8.count)
        row.writeJSON(to: &json)
        buffer.writeString("id: \(row.seq)\nevent: notification\ndata: ")
        buffer.writeImmutableBuffer(json.buffer)
        buffer.writeString("\n\n")
    }
}

/// Where one live connection stands in its user's sequence, and the rules that keep delivery
/// gap-free and duplicate-free: rows at or below `last` are dropped; a row beyond `last + 1`
/// first triggers a re-read from the database (the missing seqs are committed, or deleted).
struct LiveCursor {
    let store: NotificationStore
    let tenantId: String
    let userId: String
    var last: Int64 = 0

    /// Sends everything stored after `last`, in pages of 200.
    mutating func catchUp(_ send: ([StoredNotification]) async throws -> Void) async throws {
        while true {
            let rows = try await store.after(seq: last, tenantId: tenantId, userId: userId, limit: 200)
            guard let end = rows.last?.seq else { return }
            try await send(rows)
            last = end
            if rows.count < 200 { return }
        }
    }

    /// Sends live rows in seq order, filling gaps from the database.
    mutating func deliver(_ rows: [StoredNotification], _ send: ([StoredNotification]) async throws -> Void) async throws {
        var pending: [StoredNotification] = []
        var top = last
        for row in rows.sorted(by: { $0.seq < $1.seq }) {
            if row.seq <= top { continue }
            if row.seq > top + 1 {
                try await send(pending)
                last = top
                pending.removeAll()
                try await catchUp(send)
                top = last
                if row.seq <= top { continue }
            }
            pending.append(row)
            top = row.seq
        }
        try await send(pending)
        last = top
    }
}

/// `{"ids": [...]}` of a publish.
struct PublishResult: JSONWritable {
    var ids: [String]

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.key("ids")
        writer.arrayStart()
        for id in ids { writer.string(id) }
        writer.arrayEnd()
        writer.field("count", ids.count)
        writer.objectEnd()
    }
}

/// `{"<key>": n}`.
struct Count: JSONWritable {
    var key: StaticString
    var value: Int

    func writeJSON(to writer: inout JSONWriter) {
        writer.objectStart()
        writer.key(key)
        writer.int(value)
        writer.objectEnd()
    }
}
