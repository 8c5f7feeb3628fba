import CairnFormats
public import CairnHTTP
public import Foundation
public import HummingbirdTesting
import NIOCore

// Typed views of the bodies tests read, so a test says `response.decode(JobBody.self).state`
// instead of digging through `[String: Any]`. Each decodes the fields tests look at; a field
// missing from a body fails the decode (with the body in the message), as it would fail a client.

extension TestResponse {
    /// Decodes the JSON body as `T` (RFC 3339 timestamps as `Date`).
    /// - Throws: ``TestSetupError`` naming the status, the decoding error and the body.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        do {
            return try testJSONDecoder.decode(T.self, from: Data(body.readableBytesView))
        } catch {
            throw TestSetupError("\(status) body is not a \(T.self): \(error)\n\(text.prefix(2000))")
        }
    }
}

/// The decoder of ``TestResponse/decode(_:)``: Cairn's timestamps are RFC 3339 with milliseconds.
public let testJSONDecoder: JSONDecoder = {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .custom { decoder in
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let date = Timestamp.parse(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an RFC 3339 timestamp: \(text)"))
        }
        return date
    }
    return decoder
}()

/// An RFC 9457 problem (`application/problem+json`).
public struct ProblemBody: Decodable, Sendable {
    /// One invalid field.
    public struct Issue: Decodable, Sendable, Equatable {
        /// The field, e.g. `jobs[1].priority`.
        public var field: String
        /// What is wrong with it.
        public var issue: String
    }
    /// The HTTP status.
    public var status: Int
    /// Cairn's stable error code.
    public var code: String
    /// Human-readable detail.
    public var detail: String?
    /// Invalid fields, for `invalid_input`.
    public var errors: [Issue]?

    /// The names of the invalid fields, in order.
    public var fields: [String] { (errors ?? []).map(\.field) }
}

/// A page of a list: `{items, nextCursor}`.
public struct PageBody<Item: Decodable & Sendable>: Decodable, Sendable {
    /// The items of this page.
    public var items: [Item]
    /// The cursor of the next page, nil on the last.
    public var nextCursor: String?
}

/// `{accessToken, refreshToken, tokenType, expiresIn}`.
public struct TokenPairBody: Decodable, Sendable {
    /// The JWT access token.
    public var accessToken: String
    /// The opaque refresh token.
    public var refreshToken: String
    /// `Bearer`.
    public var tokenType: String
    /// Seconds until the access token expires.
    public var expiresIn: Int
}

/// A user.
public struct UserBody: Decodable, Sendable {
    /// UUIDv7.
    public var id: String
    /// The user's tenant.
    public var tenantId: String
    /// Normalized email.
    public var email: String
    /// Display name.
    public var name: String
    /// `owner`, `admin` or `member`.
    public var role: String
}

/// A job as `/jobs` shows it.
public struct JobBody: Decodable, Sendable {
    /// One failed attempt.
    public struct Failure: Decodable, Sendable {
        /// When it failed.
        public var at: Date
        /// Which attempt.
        public var attempt: Int
        /// The handler's error.
        public var error: String
    }
    /// UUIDv7.
    public var id: String
    /// Handler name.
    public var kind: String
    /// Queue name.
    public var queue: String
    /// `available`, `scheduled`, `running`, `retryable`, `succeeded`, `cancelled`, `discarded`.
    public var state: String
    /// 1 (most urgent) to 4.
    public var priority: Int
    /// Attempts started.
    public var attempt: Int
    /// Attempts allowed.
    public var maxAttempts: Int
    /// Not before this time.
    public var runAt: Date
    /// Free-form arguments.
    public var args: JSONValue
    /// The last progress report.
    public var progress: JSONValue?
    /// The last checkpoint.
    public var checkpoint: JSONValue?
    /// The handler's result.
    public var result: JSONValue?
    /// Failed attempts, oldest first.
    public var errors: [Failure]
    /// Deduplication key.
    public var uniqueKey: String?
    /// Creation time.
    public var createdAt: Date
    /// When the last attempt started.
    public var attemptedAt: Date?
    /// When the job reached a final state.
    public var finishedAt: Date?
}

/// A notification in a user's inbox.
public struct NotificationBody: Decodable, Sendable {
    /// UUIDv7.
    public var id: String
    /// The recipient's sequence number.
    public var seq: Int64
    /// e.g. `message`, `job_status`.
    public var type: String
    /// Title.
    public var title: String
    /// Free-form data.
    public var data: JSONValue
    /// When it was read.
    public var readAt: Date?
}

/// One outbound delivery of a notification.
public struct DeliveryBody: Decodable, Sendable {
    /// UUIDv7.
    public var id: String
    /// `webhook`, `email` or `push`.
    public var channel: String
    /// The webhook endpoint or device.
    public var endpointId: String?
    /// `pending`, `sent` or `failed`.
    public var state: String
    /// Attempts made.
    public var attempts: Int
    /// The last error.
    public var lastError: String?
    /// The provider's id of the message.
    public var providerMessageId: String?
}

/// A recurring job.
public struct ScheduleBody: Decodable, Sendable {
    /// UUIDv7.
    public var id: String
    /// Display name.
    public var name: String
    /// Cron expression.
    public var cron: String
    /// IANA zone.
    public var timeZone: String
    /// Job kind.
    public var kind: String
    /// Paused when false.
    public var enabled: Bool
    /// The next occurrence.
    public var nextRunAt: Date?
    /// The last occurrence that enqueued a job.
    public var lastRunAt: Date?
}

/// A task of `/tasks`.
public struct TaskBody: Decodable, Sendable {
    /// UUIDv7.
    public var id: String
    /// Title.
    public var title: String
    /// Longer text.
    public var description: String?
    /// Done or not.
    public var completed: Bool
    /// Creation time.
    public var createdAt: Date
    /// Last change.
    public var updatedAt: Date
}
