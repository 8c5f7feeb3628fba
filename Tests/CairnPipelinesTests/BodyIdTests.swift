import CairnServer
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("Ids in request bodies are read like path ids")
struct BodyIdTests {
    /// `fileId` in `POST /pipelines/{id}/runs` and `POST /products:import`: a UUID in upper or
    /// mixed case names the same file (RFC 9562 §4); anything else is 400 `invalid_input` on
    /// `fileId`, not 404; a well-formed id of no file is 404.
    @Test(arguments: TestEngine.available)
    func fileIdsInBodiesAreCaseInsensitiveAndMalformedOnesAreBadInput(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, client, _ in
            let file = try await tenant.upload(Array("sku,name,priceMinor,currency\nB-1,Body id,1,EUR\n".utf8))
            let pipeline = try await tenant.create(pipelineBody("SELECT * FROM input"))
            let mixed = file.prefix(8).uppercased() + file.dropFirst(8)
            for path in ["/pipelines/\(pipeline)/runs", "/products:import"] {
                for id in [file.uppercased(), mixed] {
                    let accepted = try await client.json(.post, path, ["fileId": id], token: tenant.token)
                    #expect(accepted.status == .accepted, "\(path) \(id): \(accepted.text)")
                }
                for id in ["not-a-uuid", "{\(file)}", String(file.dropLast()), file + " ", ""] {
                    let refused = try await client.json(.post, path, ["fileId": id], token: tenant.token)
                    #expect(refused.status == .badRequest, "\(path) \(id): \(refused.text)")
                    #expect(refused.object["code"] as? String == "invalid_input", "\(path) \(id)")
                    let fields = (refused.object["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String }
                    #expect(fields == ["fileId"], "\(path) \(id)")
                }
                let unknown = try await client.json(.post, path, ["fileId": "0190d6a0-0000-7000-8000-000000000000"], token: tenant.token)
                #expect(unknown.status == .notFound, "\(path): \(unknown.text)")
            }
            // The run's job names the file as it is stored, in lower case.
            let run = try await client.json(.post, "/pipelines/\(pipeline)/runs", ["fileId": file.uppercased()], token: tenant.token)
            let args = try #require(run.object["args"] as? [String: Any])
            #expect(args["fileId"] as? String == file)
        }
    }

    /// A body with an unknown member and a malformed `fileId` lists both in one problem, as
    /// bodies with several bad members do (found by a fresh-user trial: only the unknown member
    /// was named, and the malformed id came back after it was fixed).
    @Test(arguments: TestEngine.available)
    func aMalformedFileIdIsListedWithTheBodysOtherIssues(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, client, _ in
            let pipeline = try await tenant.create(pipelineBody("SELECT * FROM input"))
            for path in ["/pipelines/\(pipeline)/runs", "/products:import"] {
                let refused = try await client.json(.post, path, ["fileId": "not-a-uuid", "fileID": "x"], token: tenant.token)
                #expect(refused.status == .badRequest, "\(path): \(refused.text)")
                #expect(refused.code == "invalid_input", "\(path)")
                let problem = try refused.decode(ProblemBody.self)
                #expect(Set(problem.fields) == ["fileId", "fileID"], "\(path): \(refused.text)")
                #expect(problem.errors?.first { $0.field == "fileId" }?.issue == "is not an id (a UUID string)", "\(path)")
            }
        }
    }
}
