/// How a worker shares its free slots between tenants: each slot goes to the tenant running the
/// fewest jobs on this node (below its per-node cap), ties to the tenant whose most urgent due job
/// comes first (priority, then `run_at`). So a tenant that has just enqueued one job takes the next
/// slot that frees, however many jobs other tenants queued before it, and tenants with backlogs
/// take turns; within a tenant, jobs keep their order (most urgent, then oldest).
///
/// This is max-min fairness over running jobs, the share a round-robin scheduler gives; a
/// job's priority orders it within its tenant and breaks ties between tenants, it does not let
/// one tenant take another's share.
///
/// A freed slot can only be shared out once a job ends, and tenants choose how long their jobs
/// run: so while two or more tenants run jobs here, the last `reserve` free slots are kept for
/// tenants running none (`CAIRN_JOBS_RESERVED_SLOTS`). A tenant that has just enqueued then
/// starts at once, however long the others' jobs are; a tenant alone may use every slot.
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
    /// with the fewest running (`running`, every tenant's jobs on this node, plus the slots
    /// given so far) that is below `cap`, ties to the most urgent head; the last `reserve`
    /// slots go only to a tenant running nothing while another tenant runs jobs. A tenant may
    /// have fewer due jobs than its share: the claim then starts fewer, and the worker's next
    /// round gives the rest out again.
    ///
    /// - Returns: the tenants given at least one slot, most urgent head first.
    static func shares(free: Int, cap: Int, reserve: Int = 0, running: [String: Int], heads: [TenantHead]) -> [Share] {
        let ordered = heads.filter { $0.priority != nil }.sorted { a, b in
            (a.priority ?? 0, a.runAt ?? 0, a.tenantId) < (b.priority ?? 0, b.runAt ?? 0, b.tenantId)
        }
        var load = ordered.map { running[$0.tenantId, default: 0] }
        var given = Array(repeating: 0, count: ordered.count)
        var busy = Set(running.filter { $0.value > 0 }.keys)
        for left in stride(from: max(0, free), to: 0, by: -1) {
            var best: Int?
            for index in ordered.indices where load[index] < cap {
                if let current = best, load[current] <= load[index] { continue }
                best = index
            }
            guard let best else { break }
            // The fewest any tenant runs is one or more: no one waiting runs nothing, and the
            // reserved slots are left for whoever comes next.
            let tenant = ordered[best].tenantId
            if load[best] > 0 && left <= reserve && busy.contains(where: { $0 != tenant }) { break }
            load[best] += 1
            given[best] += 1
            busy.insert(tenant)
        }
        return zip(ordered, given).compactMap { head, count in count > 0 ? Share(tenantId: head.tenantId, count: count) : nil }
    }

    /// How many of `free` slots the one tenant with due jobs may take, under the same rules as
    /// ``shares(free:cap:reserve:running:heads:)``.
    static func slots(for tenant: String, free: Int, cap: Int, reserve: Int, running: [String: Int]) -> Int {
        let own = running[tenant, default: 0]
        var slots = max(0, min(free, cap - own))
        if running.contains(where: { $0.key != tenant && $0.value > 0 }) {
            // The first slot of a tenant running nothing may be a reserved one; no other may.
            slots = min(slots, own > 0 ? max(0, free - reserve) : max(1, free - reserve))
        }
        return slots
    }
}
