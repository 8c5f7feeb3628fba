import Crypto
import Foundation

/// Standard Webhooks signatures (https://www.standardwebhooks.com): the secret is `whsec_`
/// followed by base64 key bytes; `webhook-signature` is `v1,` + base64(HMAC-SHA256(key,
/// "<webhook-id>.<webhook-timestamp>.<body>")).
package enum WebhookSignature {
    /// A new secret: `whsec_` + base64 of 32 random bytes.
    package static func makeSecret() -> String {
        "whsec_" + Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }).base64EncodedString()
    }

    /// The `webhook-signature` header value signed with each of `secrets`: space-separated
    /// `v1,<signature>` entries (Standard Webhooks' form during a secret rotation).
    package static func sign(secrets: [String], id: String, timestamp: Int64, body: String) -> String {
        secrets.map { sign(secret: $0, id: id, timestamp: timestamp, body: body) }.joined(separator: " ")
    }

    /// The `webhook-signature` header value for a message.
    package static func sign(secret: String, id: String, timestamp: Int64, body: String) -> String {
        let keyText = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
        let key = SymmetricKey(data: Data(base64Encoded: keyText) ?? Data(keyText.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).\(body)".utf8), using: key)
        return "v1," + Data(mac).base64EncodedString()
    }
}
