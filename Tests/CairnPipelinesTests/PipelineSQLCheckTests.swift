import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Testing

@testable import CairnPipelines

/// A pipeline's SQL is compiled when the pipeline is written, against an empty `input` with the
/// declared columns: an unknown table or column is a 400 naming `sql` with SQLite's message,
/// not a run that fails later (a scheduled one at 3 a.m.).
@Suite("Pipeline SQL is compiled when the pipeline is written")
struct PipelineSQLCheckTests {
    /// The `sql` issue of a refused write, or nil when it was not refused for its SQL.
    func sqlIssue(_ response: TestResponse) -> String? {
        guard response.status == .badRequest, response.object["code"] as? String == "invalid_input" else { return nil }
        return (response.object["errors"] as? [[String: Any]])?.first { $0["field"] as? String == "sql" }?["issue"] as? String
    }

    @Test(arguments: TestEngine.available)
    func unknownTablesAndColumnsFailAtCreationAndUpdate(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, client, components in
            let declared: [String: Any] = ["columns": [["name": "species", "type": "text"], ["name": "Body Mass", "type": "integer"]]]
            let cases: [(sql: String, extra: [String: Any], says: String)] = [
                ("SELECT specie FROM input", declared, "no such column: specie"),
                ("SELECT species FROM penguins", declared, "no such table: penguins"),
                ("SELECT species FROM penguins", [:], "no such table: penguins"),
                ("SELECT species, FROM input", declared, "syntax error"),
                ("SELECT nosuchfunction(species) FROM input", declared, "no such function: nosuchfunction"),
            ]
            for (sql, extra, says) in cases {
                let response = try await client.json(.post, "/pipelines", pipelineBody(sql, extra: extra), token: tenant.token)
                let issue = sqlIssue(response)
                #expect(issue?.contains(says) == true, "\(sql): \(response.status) \(response.text)")
            }

            // Declared columns (any case, quoted names) compile; so does a column left to the
            // run's inference when none are declared.
            let good = try await tenant.create(
                pipelineBody("SELECT SPECIES, avg(\"body mass\") AS mass FROM input GROUP BY 1", extra: declared))
            _ = try await tenant.create(pipelineBody("SELECT specie FROM input"))
            let listed = try await client.json(.get, "/pipelines", token: tenant.token).object["items"] as? [[String: Any]]
            #expect(listed?.count == 2, "nothing of the refused ones was stored")

            // An update is compiled against the columns it leaves in place, and changes nothing
            // when refused.
            let patched = try await client.json(.patch, "/pipelines/\(good)", ["sql": "SELECT island FROM input"], token: tenant.token)
            #expect(sqlIssue(patched)?.contains("no such column: island") == true, "\(patched.text)")
            let dropped = try await client.json(
                .patch, "/pipelines/\(good)", ["input": ["format": "csv", "columns": [["name": "island", "type": "text"]]]], token: tenant.token)
            #expect(sqlIssue(dropped)?.contains("no such column: SPECIES") == true, "\(dropped.text)")
            let stored = try await client.json(.get, "/pipelines/\(good)", token: tenant.token).object
            #expect((stored["sql"] as? String)?.hasPrefix("SELECT SPECIES") == true)

            // A pipeline stored before this check, whose SQL does not compile, can still be
            // renamed; its SQL is judged again only when it or the input changes.
            try await components.database.write { db in
                try await db.raw("UPDATE pipelines SET spec = replace(spec, 'SELECT SPECIES', 'SELECT island, SPECIES') WHERE id = \(bind: good)")
                    .run()
            }
            let renamed = try await client.json(.patch, "/pipelines/\(good)", ["name": "renamed"], token: tenant.token)
            #expect(renamed.status == .ok, "\(renamed.text)")
            #expect(sqlIssue(try await client.json(.patch, "/pipelines/\(good)", ["sql": "SELECT island FROM input"], token: tenant.token)) != nil)
        }
    }
}
