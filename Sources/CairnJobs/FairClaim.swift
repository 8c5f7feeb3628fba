/// How a worker shares its free slots between tenants: each slot goes to the tenant running the
/// fewest jobs on this node (below its per-node cap), ties to the tenant whose most urgent due job
/// comes first (priority, then `run_at`). So a tenant that has just enqueued one job takes the next
/// slot that frees, however many jobs other tenants queued before it, and tenants with backlogs
/// take turns; within a tenant, jobs keep their order (most urgent, then oldest).
///
/// This is max-min fairness over running jobs, the share a round-robin scheduler gives; a
/// job's priority orders it within its tenant and breaks ties between tenants, it does not let
/// one tenant take another's share.
enum FairClaim {
    /// A tenant with due jobs, and its most urgent due job's place in the order of claims.
    struct TenantHead: Sendable, Equatable {
        /// The tenant.
        let tenantId: String
        /// Its most urgent due job's priority (lower runs first); nil when none is due yet.
        let priority: Int?
        /// That job's `run_at`, in milliseconds since 1970.
        let runAt: Int64?
    }

    /// How many of a tenant's due jobs one claim takes.
    struct Share: Sendable, Equatable {
        /// The tenant.
        let tenantId: String
        /// How many of its due jobs, at most.
        let count: Int
    }

    /// Shares `free` slots between the tenants in `heads`: one slot at a time, to the tenant
    /// with the fewest running (`running`, plus the slots given so far) that is below `cap`,
    /// ties to the most urgent head. A tenant may have fewer due jobs than its share: the
    /// claim then starts fewer, and the worker's next round gives the rest out again.
    ///
    /// - Returns: the tenants given at least one slot, most urgent head first.
    static func shares(free: Int, cap: Int, running: [String: Int], heads: [TenantHead]) -> [Share] {
        let ordered = heads.filter { $0.priority != nil }.sorted { a, b in
            (a.priority ?? 0, a.runAt ?? 0, a.tenantId) < (b.priority ?? 0, b.runAt ?? 0, b.tenantId)
        }
        var load = ordered.map { running[$0.tenantId, default: 0] }
        var given = Array(repeating: 0, count: ordered.count)
        for _ in 0..<max(0, free) {
            var best: Int?
            for index in ordered.indices where load[index] < cap {
                if let current = best, load[current] <= load[index] { continue }
                best = index
            }
            guard let best else { break }
            load[best] += 1
            given[best] += 1
        }
        return zip(ordered, given).compactMap { head, count in count > 0 ? Share(tenantId: head.tenantId, count: count) : nil }
    }
}
