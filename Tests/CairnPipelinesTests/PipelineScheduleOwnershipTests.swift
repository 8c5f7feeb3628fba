import CairnHTTP
import CairnJobs
import CairnServer
import CairnStorage
import CairnTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@Suite("Pipelines: a pipeline's schedule is read-only under /schedules")
struct PipelineScheduleOwnershipTests {
    /// `/schedules` lists a pipeline's schedule with `managedBy`, and refuses to change or
    /// delete it (409 `managed_by_owner` naming the pipeline): its arguments name the pipeline,
    /// so a PATCH could have pointed it at any pipeline id. Creating a `pipeline.run` schedule
    /// there is refused on `kind`, saying where pipelines get theirs.
    @Test(arguments: TestEngine.available)
    func aPipelinesScheduleChangesOnlyThroughThePipeline(engine: TestEngine) async throws {
        try await withPipelines(engine) { tenant, client, components in
            let pipeline = try await tenant.create(
                pipelineBody("SELECT count(*) AS n FROM input").merging(["schedule": ["cron": "0 3 * * *", "timeZone": "UTC"]]) { $1 })
            let listed = try await client.json(.get, "/schedules", token: tenant.token)
            let item = try #require((listed.object["items"] as? [[String: Any]])?.first, "\(listed.text)")
            #expect(item["managedBy"] as? String == "/pipelines/\(pipeline)")
            let id = try #require(item["id"] as? String)
            let path = "/schedules/\(id)"
            #expect(try await client.json(.get, path, token: tenant.token).object["managedBy"] as? String == "/pipelines/\(pipeline)")

            let hijack = try await client.json(.patch, path, ["args": ["pipelineId": UUIDv7.make()]], token: tenant.token)
            #expect(hijack.status == .conflict)
            #expect(hijack.object["code"] as? String == "managed_by_owner")
            #expect((hijack.object["detail"] as? String)?.contains("/pipelines/\(pipeline)") == true, "\(hijack.text)")
            let pause = try await client.json(.patch, path, ["enabled": false], token: tenant.token)
            #expect(pause.object["code"] as? String == "managed_by_owner")
            let deleted = try await client.json(.delete, path, token: tenant.token)
            #expect(deleted.status == .conflict)
            #expect(deleted.object["code"] as? String == "managed_by_owner")
            let after = try await client.json(.get, path, token: tenant.token).object
            #expect((after["args"] as? [String: Any])?["pipelineId"] as? String == pipeline)
            #expect(after["enabled"] as? Bool == true)

            let byHand = try await client.json(
                .post, "/schedules", ["name": "sneaky", "cron": "0 4 * * *", "kind": "pipeline.run", "args": ["pipelineId": pipeline]],
                token: tenant.token)
            #expect(byHand.status == .badRequest)
            let issue = (byHand.object["errors"] as? [[String: Any]])?.first
            #expect(issue?["field"] as? String == "kind")
            #expect((issue?["issue"] as? String)?.contains("/pipelines") == true, "\(byHand.text)")

            // The schedules /schedules manages are unchanged: no owner, still editable.
            let own = try await client.json(.post, "/schedules", ["name": "mine", "cron": "0 5 * * *", "kind": "noop"], token: tenant.token)
            #expect(own.status == .created)
            #expect(own.object["managedBy"] is NSNull)
            let ownPath = "/schedules/\(try #require(own.object["id"] as? String))"
            #expect(try await client.json(.patch, ownPath, ["enabled": false], token: tenant.token).status == .ok)
            #expect(try await client.json(.delete, ownPath, token: tenant.token).status == .noContent)
        }
    }

    /// A pipeline's schedule counts towards the tenant's schedules
    /// (`CAIRN_JOBS_MAX_SCHEDULES_PER_TENANT`), or pipelines would be a way round the limit:
    /// past it, a pipeline with a schedule, or a change that gives one a schedule, is refused
    /// with 409 `conflict` and nothing is stored; replacing a pipeline's schedule is no new one.
    @Test(arguments: TestEngine.available)
    func aPipelinesScheduleCountsTowardsTheTenantsLimit(engine: TestEngine) async throws {
        try await withPipelines(engine, configure: { $0.jobs.maxSchedulesPerTenant = 1 }) { tenant, client, _ in
            let scheduled = pipelineBody("SELECT count(*) AS n FROM input").merging(["schedule": ["cron": "0 3 * * *", "timeZone": "UTC"]]) { $1 }
            let own = try await client.json(.post, "/schedules", ["name": "mine", "cron": "0 5 * * *", "kind": "noop"], token: tenant.token)
            #expect(own.status == .created)
            let refused = try await client.json(.post, "/pipelines", scheduled, token: tenant.token)
            #expect(refused.status == .conflict, "\(refused.text)")
            #expect(refused.code == "conflict")
            #expect((try await client.json(.get, "/pipelines", token: tenant.token).object["items"] as? [Any])?.isEmpty == true)

            let plain = try await tenant.create(pipelineBody("SELECT count(*) AS n FROM input"))
            let given = try await client.json(.patch, "/pipelines/\(plain)", ["schedule": ["cron": "0 3 * * *"]], token: tenant.token)
            #expect(given.status == .conflict, "\(given.text)")
            #expect(
                try await client.json(.delete, "/schedules/\(try #require(own.object["id"] as? String))", token: tenant.token).status == .noContent)
            #expect(try await client.json(.patch, "/pipelines/\(plain)", ["schedule": ["cron": "0 3 * * *"]], token: tenant.token).status == .ok)
            #expect(try await client.json(.patch, "/pipelines/\(plain)", ["schedule": ["cron": "0 4 * * *"]], token: tenant.token).status == .ok)
            let full = try await client.json(.post, "/schedules", ["name": "mine", "cron": "0 5 * * *", "kind": "noop"], token: tenant.token)
            #expect(full.status == .conflict)
        }
    }
}
