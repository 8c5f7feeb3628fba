import CairnAccounts
import Crypto
import Dispatch
import Foundation

/// The HS256 token service the `bearer` target verifies against (a fixed, public secret).
enum FuzzJWT {
    /// The secret, 32 bytes as RFC 7518 §3.2 asks.
    static let secret = "cairn-fuzz-secret-0123456789abcdef"
    /// `secret` as a CryptoKit key, for signing fuzzed tokens.
    static let key = SymmetricKey(data: Array(secret.utf8))
    /// The service, made once per process.
    static let service: TokenService = blockingWait {
        var settings = TokenSettings(keyFile: "/nonexistent/cairn-fuzz-keys.json")
        settings.hmacSecret = secret
        // The secret is long enough, so this cannot throw.
        return try! await TokenService(settings: settings)
    }
}

/// Holds an async result for `blockingWait`; the semaphore orders the write before the read.
private final class ResultBox<Value>: @unchecked Sendable {
    var value: Value?
}

/// Runs `body` to completion from synchronous code (libFuzzer's callback is synchronous).
/// Never call it from a thread of Swift's cooperative pool (a task or an async test): with
/// every pool thread blocked here, `body` never runs. Tests replay on a thread of their own.
func blockingWait<Value: Sendable>(_ body: @escaping @Sendable () async -> Value) -> Value {
    let box = ResultBox<Value>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}
