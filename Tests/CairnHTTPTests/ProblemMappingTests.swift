import CairnHTTP
import CairnStorage
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@Suite("Problem mapping of errors that are not AppError")
struct ProblemMappingTests {
    /// A dependency that does not answer within its deadline makes the node unavailable for a
    /// moment, not broken: 503 `unavailable` with `Retry-After`, never 500 `internal`.
    @Test func aMissedDeadlineIsServiceUnavailable() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ProblemMiddleware(routes: RouteIndex()))
        router.get("/slow") { _, _ -> String in throw DeadlineExceeded(limit: .seconds(2)) }
        router.get("/broken") { _, _ -> String in throw CocoaError(.fileNoSuchFile) }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/slow", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.headers[.retryAfter] == "1")
                let body = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any]
                #expect(body?["code"] as? String == "unavailable")
            }
            try await client.execute(uri: "/broken", method: .get) { response in
                #expect(response.status == .internalServerError)
            }
        }
    }
}
