import AsyncHTTPClient
package import CairnHTTP
package import CairnNotifications
import Crypto
import Foundation
import JWTKit
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// One message for one recipient of an outbound channel, rendered from a notification.
package struct OutboundMessage: Sendable, Equatable {
    /// The notification's id (also the id providers see, for deduplication on their side).
    package var notificationId: String
    /// The delivery's id: `apns-id` on APNs, a custom argument elsewhere.
    package var deliveryId: String
    /// Notification type.
    package var type: String
    /// Title: the email subject, the push alert title.
    package var title: String
    /// Body text.
    package var body: String
    /// The notification's `data`, a JSON object.
    package var data: JSONValue
    /// The HTML body of an email, when the type's template has one.
    package var html: String? = nil

    /// Creates a message.
    package init(notificationId: String, deliveryId: String, type: String, title: String, body: String, data: JSONValue) {
        self.notificationId = notificationId
        self.deliveryId = deliveryId
        self.type = type
        self.title = title
        self.body = body
        self.data = data
    }
}

/// What a provider made of one send.
package enum ProviderOutcome: Sendable, Equatable {
    /// Accepted; the provider's message id when it gave one.
    case sent(messageId: String?)
    /// A transient failure (throttling, a 5xx, a timeout, an expired access token): try again later.
    case retry(String)
    /// A permanent refusal (bad request, bad credentials): trying again cannot help.
    case rejected(String)
    /// The recipient no longer exists (an unregistered or invalid device token): its
    /// registration is removed.
    case recipientGone(String)
}

extension ProviderOutcome {
    /// This outcome, unless it is a network failure of a send whose task was cancelled (the
    /// node's shutdown hands the job back; a cancel request or a lost lease ends it): the
    /// provider was not judged then, so no attempt nor error may be recorded.
    /// - Throws: `CancellationError` in that case, which the job worker takes as the job
    ///   handed back (or stopped), not as a failed attempt.
    func unlessCancelled() throws -> ProviderOutcome {
        if case .retry = self, Task.isCancelled { throw CancellationError() }
        return self
    }
}

/// A provider adapter of an outbound channel (email, push or SMS): sends one message to one
/// address (an email address, a device token, a phone number) with the tenant's credentials.
///
/// Adapters classify every answer into a ``ProviderOutcome`` so that the delivery job knows
/// whether to retry (the job system's backoff and dead letters), give up, or forget a device.
package protocol NotificationProvider: Sendable {
    /// The channel this provider serves.
    var channel: NotificationChannel { get }
    /// Sends `message` to `address`.
    /// - Throws: only for programming errors; network failures are a `.retry` outcome.
    func send(_ message: OutboundMessage, to address: String) async -> ProviderOutcome
}

/// Where the providers live. The operator sets them (never a tenant, whose requests could
/// otherwise be pointed at internal addresses); tests point them at a local fake.
package struct ProviderEndpoints: Sendable {
    /// SendGrid v3 API base URL (`CAIRN_SENDGRID_URL`).
    package var sendGrid = "https://api.sendgrid.com"
    /// FCM HTTP v1 API base URL (`CAIRN_FCM_URL`).
    package var fcm = "https://fcm.googleapis.com"
    /// Google OAuth 2.0 token endpoint for service accounts (`CAIRN_FCM_TOKEN_URL`); used instead
    /// of the service account file's `token_uri`, which a tenant controls.
    package var fcmToken = "https://oauth2.googleapis.com/token"
    /// APNs production base URL (`CAIRN_APNS_URL`).
    package var apns = "https://api.push.apple.com"
    /// APNs development (sandbox) base URL (`CAIRN_APNS_SANDBOX_URL`).
    package var apnsSandbox = "https://api.sandbox.push.apple.com"
    /// Twilio REST API base URL (`CAIRN_TWILIO_URL`).
    package var twilio = "https://api.twilio.com"
    /// A PEM file of extra trusted certificate authorities for the providers' TLS
    /// (`CAIRN_PROVIDERS_CA_FILE`), besides the system's.
    package var caFile: String?
    /// Time allowed for one provider request.
    package var timeout: Duration = .seconds(10)

    /// The defaults: the providers' public endpoints.
    package init() {}
}

/// One provider request and the classification of its answer, shared by the adapters.
enum ProviderHTTP {
    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: String
    }

    /// One request; at most 64 KiB of the answer is read. Network errors throw.
    static func send(
        _ client: HTTPClient, url: String, headers: [(String, String)], body: String, timeout: Duration
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "user-agent", value: "Cairn-Notifications/1")
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await OutboundHTTP.execute(request, on: client, timeout: timeout, operation: "provider request")
        let bytes = try await response.body.collect(upTo: 64 * 1024)
        return Answer(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
    }

    /// One send of a message: the request, its answer classified by `outcome`; a network
    /// failure is a `.retry` (the delivery job's backoff tries again).
    static func deliver(
        _ client: HTTPClient, url: String, headers: [(String, String)], body: String, timeout: Duration,
        outcome: (Answer) -> ProviderOutcome
    ) async -> ProviderOutcome {
        do {
            return outcome(try await send(client, url: url, headers: headers, body: body, timeout: timeout))
        } catch {
            return .retry(describe(error))
        }
    }

    /// A network failure's short description (never the request, which holds credentials).
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            return "timeout"
        }
        return "connection failed"
    }

    /// The most common classification: 2xx sent, 408/429/5xx retried, other 4xx rejected.
    static func classify(_ answer: Answer, messageId: String?, detail: String) -> ProviderOutcome {
        switch answer.status {
        case 200..<300: return .sent(messageId: messageId)
        case 408, 429, 500...599: return .retry("HTTP \(answer.status)\(detail.isEmpty ? "" : " \(detail)")")
        default: return .rejected("HTTP \(answer.status)\(detail.isEmpty ? "" : " \(detail)")")
        }
    }

    /// A provider's error reason from its JSON answer, cut short (never echoing a credential).
    static func reason(_ body: String, _ paths: [[String]]) -> String {
        guard let value = JSONValue(text: body) else { return "" }
        for path in paths {
            var current: JSONValue? = value
            for key in path { current = current?[key] }
            if let text = current?.string { return String(text.prefix(120)) }
            if case .array(let items) = current, let first = items.first?["message"]?.string { return String(first.prefix(120)) }
        }
        return ""
    }
}

/// Short-lived credentials (OAuth access tokens, APNs provider tokens) cached per tenant and
/// key until shortly before they expire, so each send does not mint a new one; concurrent
/// sends that find none wait for one minting instead of each asking the token endpoint.
final class CredentialCache: Sendable {
    private struct Entry {
        var value: String
        var until: ContinuousClock.Instant
    }
    private let entries = Mutex<[String: Entry]>([:])
    private let minting = Mutex<[String: Task<(String, Duration), any Error>]>([:])

    /// The cached credential for `key`, or the one `mint` makes (value and lifetime).
    /// - Throws: what `mint` throws (nothing is cached then).
    func value(_ key: String, mint: @escaping @Sendable () async throws -> (String, Duration)) async throws -> String {
        let cached = entries.withLock { entries -> String? in
            guard let entry = entries[key] else { return nil }
            if entry.until > .now { return entry.value }
            entries[key] = nil
            return nil
        }
        if let cached { return cached }
        let task = minting.withLock { tasks in
            if let running = tasks[key] { return running }
            let task = Task { try await mint() }
            tasks[key] = task
            return task
        }
        defer { minting.withLock { tasks in if tasks[key] == task { tasks[key] = nil } } }
        let (value, lifetime) = try await task.value
        entries.withLock { entries in
            if entries.count > 10_000 { entries.removeAll() }
            entries[key] = Entry(value: value, until: .now + lifetime)
        }
        return value
    }

    /// Drops a credential the provider refused as expired.
    func forget(_ key: String) {
        entries.withLock { _ = $0.removeValue(forKey: key) }
    }
}

// MARK: Email: SendGrid v3 Mail Send

/// A tenant's SendGrid-compatible email settings.
package struct SendGridConfig: Sendable, Codable, Equatable {
    /// API key (secret; never returned).
    package var apiKey: String
    /// Sender address.
    package var fromEmail: String
    /// Sender display name.
    package var fromName: String?
}

/// Email through SendGrid's v3 Mail Send API (`POST /v3/mail/send`, bearer API key, 202 on
/// acceptance with `X-Message-Id`); any API compatible with it works.
struct SendGridProvider: NotificationProvider {
    let config: SendGridConfig
    let endpoints: ProviderEndpoints
    let client: HTTPClient

    var channel: NotificationChannel { .email }

    func send(_ message: OutboundMessage, to address: String) async -> ProviderOutcome {
        var from: [String: JSONValue] = ["email": .string(config.fromEmail)]
        if let name = config.fromName { from["name"] = .string(name) }
        let text = message.body.isEmpty ? message.title : message.body
        let body = JSONValue.object([
            "personalizations": .array([.object(["to": .array([.object(["email": .string(address)])])])]),
            "from": .object(from),
            "subject": .string(message.title),
            // SendGrid wants text/plain before text/html.
            "content": .array(
                [.object(["type": .string("text/plain"), "value": .string(text)])]
                    + (message.html.map { [.object(["type": .string("text/html"), "value": .string($0)])] } ?? [])),
            "custom_args": .object(["notification_id": .string(message.notificationId), "delivery_id": .string(message.deliveryId)]),
        ])
        return await ProviderHTTP.deliver(
            client, url: endpoints.sendGrid + "/v3/mail/send",
            headers: [("authorization", "Bearer \(config.apiKey)"), ("content-type", "application/json")], body: body.text,
            timeout: endpoints.timeout
        ) { answer in
            ProviderHTTP.classify(
                answer, messageId: answer.headers.first(name: "x-message-id"), detail: ProviderHTTP.reason(answer.body, [["errors"]]))
        }
    }
}

// MARK: Push payloads

/// Fitting a notification into a push payload: APNs refuses payloads over 4,096 bytes
/// (413 `PayloadTooLarge`) and FCM messages over 4,096 bytes besides the token (400).
enum PushPayload {
    static let limit = 4096

    /// The payload `render(title, body, withData)` makes, within `limit` bytes: with the
    /// notification's data when it fits, else without it (clients fetch the notification by
    /// id), then with the longest body that fits (cut at a character, ending in "…"), and at
    /// last the longest title. Sizes are measured on the rendered JSON, escapes included.
    static func fit(_ message: OutboundMessage, limit: Int, render: (String, String, Bool) -> String) -> String {
        let full = render(message.title, message.body, true)
        if full.utf8.count <= limit { return full }
        let lean = render(message.title, message.body, false)
        if lean.utf8.count <= limit { return lean }
        let body = Array(message.body)
        if let fitted = longest(upTo: body.count - 1, { render(message.title, String(body[..<$0]) + "…", false) }, limit: limit) {
            return fitted
        }
        let title = Array(message.title)
        return longest(upTo: max(0, title.count - 1), { render(String(title[..<$0]) + "…", "", false) }, limit: limit)
            ?? render("…", "", false)
    }

    /// The rendering of the largest `n` in `0...upper` that fits `limit` (binary search: the
    /// size grows with `n`), or nil when not even `n = 0` fits.
    private static func longest(upTo upper: Int, _ render: (Int) -> String, limit: Int) -> String? {
        guard upper >= 0 else { return nil }
        var best: String?
        var low = 0
        var high = upper
        while low <= high {
            let middle = (low + high) / 2
            let text = render(middle)
            if text.utf8.count <= limit {
                best = text
                low = middle + 1
            } else {
                high = middle - 1
            }
        }
        return best
    }
}

// MARK: Push: FCM HTTP v1

/// A tenant's Firebase Cloud Messaging settings: the fields of a Google service account key
/// file that FCM HTTP v1 needs.
package struct FCMConfig: Sendable, Codable, Equatable {
    /// `project_id`.
    package var projectId: String
    /// `client_email`: the service account, the JWT's issuer.
    package var clientEmail: String
    /// `private_key`: RSA private key PEM (secret; never returned).
    package var privateKey: String
    /// `private_key_id`: the JWT's `kid`.
    package var privateKeyId: String?
}

/// The claims of a service account's OAuth 2.0 JWT bearer assertion (RFC 7523 §3; Google's
/// "OAuth 2.0 for server to server applications").
struct ServiceAccountAssertion: JWTPayload {
    var iss: String
    var scope: String
    var aud: String
    var iat: IssuedAtClaim
    var exp: ExpirationClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Push through FCM HTTP v1 (`POST /v1/projects/{project}/messages:send`) with an OAuth 2.0
/// access token obtained from a service account assertion signed RS256 (RFC 7523), cached
/// until five minutes before it expires.
struct FCMProvider: NotificationProvider {
    static let scope = "https://www.googleapis.com/auth/firebase.messaging"

    let config: FCMConfig
    let endpoints: ProviderEndpoints
    let client: HTTPClient
    let cache: CredentialCache
    let cacheKey: String

    var channel: NotificationChannel { .push }

    enum TokenFailure: Error {
        case rejected(String)
        case retry(String)
    }

    func accessToken() async throws -> String {
        try await cache.value(cacheKey) { [config, endpoints, client] in
            let assertion: String
            do {
                let kid = config.privateKeyId.map { JWKIdentifier(string: $0) }
                let keys = await JWTKeyCollection().add(rsa: try Insecure.RSA.PrivateKey(pem: config.privateKey), digestAlgorithm: .sha256, kid: kid)
                // Whole seconds, as Google's own libraries send them (RFC 7519 allows fractions).
                let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
                assertion = try await keys.sign(
                    ServiceAccountAssertion(
                        iss: config.clientEmail, scope: Self.scope, aud: endpoints.fcmToken, iat: .init(value: now),
                        exp: .init(value: now.addingTimeInterval(3600))),
                    kid: kid)
            } catch {
                throw TokenFailure.rejected("the service account key cannot sign")
            }
            let form = "grant_type=\(Self.formEncode("urn:ietf:params:oauth:grant-type:jwt-bearer"))&assertion=\(Self.formEncode(assertion))"
            let answer: ProviderHTTP.Answer
            do {
                answer = try await ProviderHTTP.send(
                    client, url: endpoints.fcmToken, headers: [("content-type", "application/x-www-form-urlencoded")], body: form,
                    timeout: endpoints.timeout)
            } catch {
                throw TokenFailure.retry("token endpoint: \(ProviderHTTP.describe(error))")
            }
            let json = JSONValue(text: answer.body)
            guard (200..<300).contains(answer.status), let token = json?["access_token"]?.string else {
                if answer.status == 429 || answer.status >= 500 { throw TokenFailure.retry("token endpoint: HTTP \(answer.status)") }
                throw TokenFailure.rejected("token endpoint: HTTP \(answer.status) \((json?["error"]?.string ?? "").prefix(60))")
            }
            // Renewed five minutes before Google's expiry.
            return (token, .seconds(max(60, (json?["expires_in"]?.int ?? 3600) - 300)))
        }
    }

    static func formEncode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// FCM `data` values must be strings, and the whole message at most 4 KB: the ids and
    /// type always go, the notification's data only when it fits (clients fetch it otherwise).
    static func payload(_ message: OutboundMessage, token: String) -> String {
        // Measured with the token, which FCM may not count: on the safe side of its 4,096.
        PushPayload.fit(message, limit: PushPayload.limit) { title, body, withData in
            var data: [String: JSONValue] = ["notificationId": .string(message.notificationId), "type": .string(message.type)]
            if withData { data["data"] = .string(message.data.text) }
            return JSONValue.object([
                "message": .object([
                    "token": .string(token),
                    "notification": .object(["title": .string(title), "body": .string(body)]),
                    "data": .object(data),
                ])
            ]).text
        }
    }

    func send(_ message: OutboundMessage, to token: String) async -> ProviderOutcome {
        let accessToken: String
        do {
            accessToken = try await self.accessToken()
        } catch TokenFailure.rejected(let why) {
            return .rejected(why)
        } catch {
            return .retry((error as? TokenFailure).map { if case .retry(let why) = $0 { why } else { "" } } ?? "token endpoint failed")
        }
        let project = config.projectId.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(["-", "_"])) ?? config.projectId
        return await ProviderHTTP.deliver(
            client, url: "\(endpoints.fcm)/v1/projects/\(project)/messages:send",
            headers: [("authorization", "Bearer \(accessToken)"), ("content-type", "application/json")],
            body: Self.payload(message, token: token), timeout: endpoints.timeout, outcome: outcome(of:))
    }

    /// What FCM's answer to a send means.
    func outcome(of answer: ProviderHTTP.Answer) -> ProviderOutcome {
        let json = JSONValue(text: answer.body)
        // FCM names the reason in error.details[].errorCode (UNREGISTERED, INVALID_ARGUMENT, …).
        var code = json?["error"]?["status"]?.string ?? ""
        if case .array(let details)? = json?["error"]?["details"], let errorCode = details.compactMap({ $0["errorCode"]?.string }).first {
            code = errorCode
        }
        switch answer.status {
        case 200..<300: return .sent(messageId: json?["name"]?.string)
        case 401:
            // The cached access token expired or was revoked: mint a new one on the retry.
            cache.forget(cacheKey)
            return .retry("HTTP 401 \(code)")
        case 404 where code == "UNREGISTERED" || code == "NOT_FOUND", 400 where code == "UNREGISTERED":
            return .recipientGone("HTTP \(answer.status) \(code)")
        default:
            return ProviderHTTP.classify(answer, messageId: nil, detail: code)
        }
    }
}

// MARK: Push: APNs over HTTP/2

/// A tenant's Apple Push Notification service settings (token-based authentication).
package struct APNsConfig: Sendable, Codable, Equatable {
    /// The Apple developer team id, the provider token's issuer.
    package var teamId: String
    /// The signing key's id, the provider token's `kid`.
    package var keyId: String
    /// The `.p8` signing key: a P-256 private key PEM (secret; never returned).
    package var privateKey: String
    /// `apns-topic`: the app's bundle id.
    package var topic: String
    /// `production` or `sandbox`.
    package var environment: String
}

/// The claims of an APNs provider token: issuer (team id) and issued-at.
struct APNsProviderClaims: JWTPayload {
    var iss: String
    var iat: IssuedAtClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Push through APNs (`POST /3/device/{token}` over HTTP/2) with an ES256 provider token,
/// reused for 40 minutes (Apple refuses tokens older than an hour and throttles tokens
/// renewed more often than every 20 minutes).
struct APNsProvider: NotificationProvider {
    let config: APNsConfig
    let endpoints: ProviderEndpoints
    let client: HTTPClient
    let cache: CredentialCache
    let cacheKey: String

    var channel: NotificationChannel { .push }

    func providerToken() async throws -> String {
        try await cache.value(cacheKey) { [config] in
            let kid = JWKIdentifier(string: config.keyId)
            let keys = await JWTKeyCollection().add(ecdsa: try ES256PrivateKey(pem: config.privateKey), kid: kid)
            let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            let token = try await keys.sign(APNsProviderClaims(iss: config.teamId, iat: .init(value: now)), kid: kid)
            return (token, .seconds(40 * 60))
        }
    }

    /// `aps.alert` plus the ids and type; the notification's data when the whole payload stays
    /// within APNs' 4 KB.
    static func payload(_ message: OutboundMessage) -> String {
        PushPayload.fit(message, limit: PushPayload.limit) { title, body, withData in
            var object: [String: JSONValue] = [
                "aps": .object(["alert": .object(["title": .string(title), "body": .string(body)])]),
                "notificationId": .string(message.notificationId),
                "type": .string(message.type),
            ]
            if withData { object["data"] = message.data }
            return JSONValue.object(object).text
        }
    }

    func send(_ message: OutboundMessage, to deviceToken: String) async -> ProviderOutcome {
        let token: String
        do {
            token = try await providerToken()
        } catch {
            return .rejected("the APNs signing key cannot sign")
        }
        let base = config.environment == "sandbox" ? endpoints.apnsSandbox : endpoints.apns
        return await ProviderHTTP.deliver(
            client, url: "\(base)/3/device/\(deviceToken)",
            headers: [
                ("authorization", "bearer \(token)"), ("apns-topic", config.topic), ("apns-push-type", "alert"), ("apns-priority", "10"),
                ("apns-id", message.deliveryId), ("content-type", "application/json"),
            ], body: Self.payload(message), timeout: endpoints.timeout, outcome: outcome(of:))
    }

    /// What APNs' answer to a send means.
    func outcome(of answer: ProviderHTTP.Answer) -> ProviderOutcome {
        let reason = ProviderHTTP.reason(answer.body, [["reason"]])
        switch (answer.status, reason) {
        case (200, _): return .sent(messageId: answer.headers.first(name: "apns-id"))
        case (410, _), (400, "BadDeviceToken"), (400, "DeviceTokenNotForTopic"):
            return .recipientGone("HTTP \(answer.status) \(reason)")
        case (403, "ExpiredProviderToken"):
            cache.forget(cacheKey)
            return .retry("HTTP 403 \(reason)")
        default:
            return ProviderHTTP.classify(answer, messageId: nil, detail: reason)
        }
    }
}

// MARK: SMS: Twilio Programmable Messaging

/// A tenant's Twilio-compatible SMS settings.
package struct TwilioConfig: Sendable, Codable, Equatable {
    /// The account SID (`AC…`): the user name of HTTP Basic authentication and part of the URL.
    package var accountSid: String
    /// The auth token (secret; never returned): the password of HTTP Basic authentication.
    package var authToken: String
    /// The sender: an E.164 number, a messaging service SID or an alphanumeric sender id.
    package var from: String
}

/// SMS through Twilio's Messages resource (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
/// form-encoded `To`, `From`, `Body`, HTTP Basic authentication per RFC 7617 with the account
/// SID and auth token; 201 with the message's `sid` on acceptance); any API compatible with it
/// works. Twilio's error codes 21211 (invalid `To`) and 21614 (not a mobile number) are refusals.
struct TwilioProvider: NotificationProvider {
    /// Twilio's limit on a message body: 1,600 characters (longer bodies are refused with 21617).
    static let maxBody = 1600

    let config: TwilioConfig
    let endpoints: ProviderEndpoints
    let client: HTTPClient

    var channel: NotificationChannel { .sms }

    /// The SMS text: the title, then the body on its own line, cut to ``maxBody`` characters.
    static func text(_ message: OutboundMessage) -> String {
        let text = message.body.isEmpty ? message.title : message.title.isEmpty ? message.body : message.title + "\n" + message.body
        return text.count <= maxBody ? text : String(text.prefix(maxBody - 1)) + "…"
    }

    func send(_ message: OutboundMessage, to phone: String) async -> ProviderOutcome {
        let form = [("To", phone), ("From", config.from), ("Body", Self.text(message))]
            .map { "\($0.0)=\(FCMProvider.formEncode($0.1))" }.joined(separator: "&")
        let credentials = Data("\(config.accountSid):\(config.authToken)".utf8).base64EncodedString()
        let account = FCMProvider.formEncode(config.accountSid)
        return await ProviderHTTP.deliver(
            client, url: "\(endpoints.twilio)/2010-04-01/Accounts/\(account)/Messages.json",
            headers: [("authorization", "Basic \(credentials)"), ("content-type", "application/x-www-form-urlencoded")], body: form,
            timeout: endpoints.timeout, outcome: Self.outcome(of:))
    }

    /// What Twilio's answer to a send means.
    static func outcome(of answer: ProviderHTTP.Answer) -> ProviderOutcome {
        let json = JSONValue(text: answer.body)
        let code = json?["code"]?.int
        let detail = code.map { "code \($0)" } ?? ""
        switch answer.status {
        case 200..<300: return .sent(messageId: json?["sid"]?.string)
        case 400 where code == 21211 || code == 21614:
            return .rejected("HTTP 400 code \(code ?? 0): the number is invalid or cannot receive SMS")
        default: return ProviderHTTP.classify(answer, messageId: nil, detail: detail)
        }
    }
}
