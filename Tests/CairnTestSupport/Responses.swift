import CairnFormats
package import CairnHTTP
package import Foundation
package import HummingbirdTesting
import NIOCore

// Typed views of the bodies tests read, so a test says `response.decode(JobBody.self).state`
// instead of digging through `[String: Any]`. Each decodes the fields tests look at; a field
// missing from a body fails the decode (with the body in the message), as it would fail a client.

extension TestResponse {
    /// Decodes the JSON body as `T` (RFC 3339 timestamps as `Date`).
    /// - Throws: ``TestSetupError`` naming the status, the decoding error and the body.
    package func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        do {
            return try testJSONDecoder.decode(T.self, from: Data(body.readableBytesView))
        } catch {
            throw TestSetupError("\(status) body is not a \(T.self): \(error)\n\(text.prefix(2000))")
        }
    }
}

/// The decoder of ``TestResponse/decode(_:)``: Cairn's timestamps are RFC 3339 with milliseconds.
package let testJSONDecoder: JSONDecoder = {
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
package struct ProblemBody: Decodable, Sendable {
    /// One invalid field.
    package struct Issue: Decodable, Sendable, Equatable {
        /// The field, e.g. `jobs[1].priority`.
        package var field: String
        /// What is wrong with it.
        package var issue: String
    }
    /// The HTTP status.
    package var status: Int
    /// Cairn's stable error code.
    package var code: String
    /// Human-readable detail.
    package var detail: String?
    /// Invalid fields, for `invalid_input`.
    package var errors: [Issue]?

    /// The names of the invalid fields, in order.
    package var fields: [String] { (errors ?? []).map(\.field) }
}

/// A page of a list: `{items, nextCursor}`.
package struct PageBody<Item: Decodable & Sendable>: Decodable, Sendable {
    /// The items of this page.
    package var items: [Item]
    /// The cursor of the next page, nil on the last.
    package var nextCursor: String?
}

/// `{accessToken, refreshToken, tokenType, expiresIn}`.
package struct TokenPairBody: Decodable, Sendable {
    /// The JWT access token.
    package var accessToken: String
    /// The opaque refresh token.
    package var refreshToken: String
    /// `Bearer`.
    package var tokenType: String
    /// Seconds until the access token expires.
    package var expiresIn: Int
}

/// A user.
package struct UserBody: Decodable, Sendable {
    /// UUIDv7.
    package var id: String
    /// The user's tenant.
    package var tenantId: String
    /// Normalized email.
    package var email: String
    /// Display name.
    package var name: String
    /// `owner`, `admin` or `member`.
    package var role: String
}

/// A job as `/jobs` shows it.
package struct JobBody: Decodable, Sendable {
    /// One failed attempt.
    package struct Failure: Decodable, Sendable {
        /// When it failed.
        package var at: Date
        /// Which attempt.
        package var attempt: Int
        /// The handler's error.
        package var error: String
    }
    /// UUIDv7.
    package var id: String
    /// Handler name.
    package var kind: String
    /// Queue name.
    package var queue: String
    /// `available`, `scheduled`, `running`, `retryable`, `succeeded`, `cancelled`, `discarded`.
    package var state: String
    /// 1 (most urgent) to 4.
    package var priority: Int
    /// Attempts started.
    package var attempt: Int
    /// Attempts allowed.
    package var maxAttempts: Int
    /// The attempt time limit the job asked for, in milliseconds.
    package var timeoutMs: Int64?
    /// Not before this time.
    package var runAt: Date
    /// Free-form arguments.
    package var args: JSONValue
    /// The last progress report.
    package var progress: JSONValue?
    /// The last checkpoint.
    package var checkpoint: JSONValue?
    /// The handler's result.
    package var result: JSONValue?
    /// Failed attempts, oldest first.
    package var errors: [Failure]
    /// Deduplication key.
    package var uniqueKey: String?
    /// Creation time.
    package var createdAt: Date
    /// When the last attempt started.
    package var attemptedAt: Date?
    /// When the job reached a final state.
    package var finishedAt: Date?
}

/// A notification in a user's inbox.
package struct NotificationBody: Decodable, Sendable {
    /// UUIDv7.
    package var id: String
    /// The recipient's sequence number.
    package var seq: Int64
    /// e.g. `message`, `job_status`.
    package var type: String
    /// Title.
    package var title: String
    /// Free-form data.
    package var data: JSONValue
    /// When it was read.
    package var readAt: Date?
}

/// One outbound delivery of a notification.
package struct DeliveryBody: Decodable, Sendable {
    /// UUIDv7.
    package var id: String
    /// `webhook`, `email` or `push`.
    package var channel: String
    /// The webhook endpoint or device.
    package var endpointId: String?
    /// `pending`, `sent` or `failed`.
    package var state: String
    /// Attempts made.
    package var attempts: Int
    /// The last error.
    package var lastError: String?
    /// The provider's id of the message.
    package var providerMessageId: String?
}

/// A recurring job.
package struct ScheduleBody: Decodable, Sendable {
    /// UUIDv7.
    package var id: String
    /// Display name.
    package var name: String
    /// Cron expression.
    package var cron: String
    /// IANA zone.
    package var timeZone: String
    /// Job kind.
    package var kind: String
    /// Paused when false.
    package var enabled: Bool
    /// The next occurrence.
    package var nextRunAt: Date?
    /// The last occurrence that enqueued a job.
    package var lastRunAt: Date?
}

/// A task of `/tasks`.
package struct TaskBody: Decodable, Sendable {
    /// UUIDv7.
    package var id: String
    /// Title.
    package var title: String
    /// Longer text.
    package var description: String?
    /// Done or not.
    package var completed: Bool
    /// Creation time.
    package var createdAt: Date
    /// Last change.
    package var updatedAt: Date
}

/// The status and header fields of a response head as curl's `-D` writes it (names
/// lower-cased; a field sent more than once has its values joined with ", ", RFC 9110 §5.3).
package func parseResponseHead(_ head: String) -> (status: Int, headers: [String: String]) {
    var status = 0
    var headers: [String: String] = [:]
    for line in head.split(separator: "\r\n") {
        if line.hasPrefix("HTTP/") {
            status = Int(line.split(separator: " ")[1]) ?? 0
        } else if let colon = line.firstIndex(of: ":") {
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name] = headers[name].map { $0 + ", " + value } ?? value
        }
    }
    return (status, headers)
}
