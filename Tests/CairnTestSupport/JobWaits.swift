package import CairnJobs
import CairnServer
import HTTPTypes

// Waits on the job events the queue already publishes (every claim, progress report,
// checkpoint, outcome, cancellation, retry and rescue is announced on the EventBus, across
// nodes on PostgreSQL) instead of polling. Each wait re-reads its source of truth once the
// subscription is listening, so a change announced before that is not missed.

extension JobQueue {
    /// Returns once `condition` holds: checked at once, when the job-event subscription starts
    /// listening, and after every job change on any node.
    /// - Throws: ``WaitTimeout`` after `timeout` (a bound on a failure, never a wait a passing
    ///   test sits through), or what `condition` throws.
    package func waitUntil(_ what: String, timeout: Duration = .seconds(60), _ condition: @escaping @Sendable () async throws -> Bool)
        async throws
    {
        try await waitOnChanges(what, timeout: timeout, of: nil, condition)
    }

    /// Returns job `id` once `predicate` holds for it; re-read when the subscription starts
    /// listening and whenever the job changes.
    /// - Throws: ``WaitTimeout`` after `timeout`; ``TestSetupError`` when there is no such job.
    @discardableResult
    package func waitForJob(_ id: String, _ what: String = "", timeout: Duration = .seconds(60), until predicate: @escaping @Sendable (Job) -> Bool)
        async throws -> Job
    {
        let store = self.store
        let last = Observed<Job?>(nil)
        do {
            try await waitOnChanges(what.isEmpty ? "job \(id)" : what, timeout: timeout, of: id) {
                guard let job = try await store.jobs(ids: [id]).first else { throw TestSetupError("no job \(id)") }
                last.update { $0 = job }
                return predicate(job)
            }
        } catch var error as WaitTimeout {
            error.description += "; last seen: " + (last.value.map { "\($0.state.rawValue), attempt \($0.attempt)" } ?? "never")
            throw error
        }
        return last.value!
    }

    /// Returns job `id` once it is in `state`.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    package func waitForJob(_ id: String, state: JobState, timeout: Duration = .seconds(60)) async throws -> Job {
        try await waitForJob(id, "job \(id) reaching \(state.rawValue)", timeout: timeout) { $0.state == state }
    }

    /// Returns job `id` once it is final (succeeded, cancelled or discarded).
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    package func waitUntilFinished(_ id: String, timeout: Duration = .seconds(60)) async throws -> Job {
        try await waitForJob(id, "job \(id) finishing", timeout: timeout) { $0.state.isFinal }
    }

    private func waitOnChanges(
        _ what: String, timeout: Duration, of jobId: String?, _ condition: @escaping @Sendable () async throws -> Bool
    ) async throws {
        let signal = ChangeSignal()
        let changes = events.changes(onListening: { signal.notify() })
        let forward = Task {
            for await ids in changes where jobId.map({ ids.contains($0) }) ?? true { signal.notify() }
        }
        defer { forward.cancel() }
        try await signal.wait(what, timeout: timeout, until: condition)
    }
}

extension TestApp {
    /// `GET /jobs/{id}` as the caller with `token` sees it.
    package func job(_ id: String, token: String) async throws -> JobBody {
        try await client.json(.get, "/jobs/\(id)", token: token).decode(JobBody.self)
    }

    /// Waits (on job events) until job `id` is in `state`, then returns it as `GET /jobs/{id}`
    /// shows it to the caller with `token`.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    package func waitForJob(_ id: String, state: JobState, token: String, timeout: Duration = .seconds(60)) async throws -> JobBody {
        try await components.jobs.waitForJob(id, state: state, timeout: timeout)
        return try await job(id, token: token)
    }

    /// Waits (on job events) until job `id` is final, then returns it as `GET /jobs/{id}` shows
    /// it to the caller with `token`.
    /// - Throws: ``WaitTimeout`` after `timeout`.
    @discardableResult
    package func waitUntilFinished(_ id: String, token: String, timeout: Duration = .seconds(60)) async throws -> JobBody {
        try await components.jobs.waitUntilFinished(id, timeout: timeout)
        return try await job(id, token: token)
    }
}
