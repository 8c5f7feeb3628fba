import Testing

@testable import CairnJobs

@Suite("Jobs: sharing free slots between tenants")
struct FairClaimTests {
    private func head(_ tenant: String, priority: Int = 1, runAt: Int64) -> FairClaim.TenantHead {
        FairClaim.TenantHead(tenantId: tenant, priority: priority, runAt: runAt)
    }

    @Test func aSlotGoesToTheTenantRunningFewestThoughItsJobIsTheNewest() {
        let heads = [head("a", runAt: 1), head("b", runAt: 9), head("c", runAt: 2)]
        let shares = FairClaim.shares(free: 1, cap: 2, running: ["a": 1, "c": 1], heads: heads)
        #expect(shares == [FairClaim.Share(tenantId: "b", count: 1)])
    }

    @Test func slotsAreSharedOneAtATimeUpToEachCap() {
        let heads = [head("a", runAt: 1), head("b", runAt: 2), head("c", runAt: 3)]
        // a runs 1; b and c none: b, c, then a and b (both at 1, a's head first), then c.
        let shares = FairClaim.shares(free: 5, cap: 2, running: ["a": 1], heads: heads)
        #expect(shares == [.init(tenantId: "a", count: 1), .init(tenantId: "b", count: 2), .init(tenantId: "c", count: 2)])
    }

    @Test func tiesGoToTheMostUrgentHeadAndCapsLeaveSlotsFree() {
        let heads = [head("a", priority: 3, runAt: 1), head("b", priority: 1, runAt: 5), head("c", runAt: 0)]
        #expect(FairClaim.shares(free: 1, cap: 4, running: [:], heads: heads) == [.init(tenantId: "c", count: 1)])
        #expect(FairClaim.shares(free: 1, cap: 4, running: ["c": 1], heads: heads) == [.init(tenantId: "b", count: 1)])
        // Everyone at the cap: nothing is given, though slots are free.
        #expect(FairClaim.shares(free: 3, cap: 1, running: ["a": 1, "b": 1, "c": 1], heads: heads).isEmpty)
    }

    @Test func whileTwoTenantsRunTheLastSlotIsKeptForATenantRunningNothing() {
        let heads = [head("a", runAt: 1), head("c", runAt: 2)]
        // a and c take three of four slots; the fourth waits for a tenant running nothing.
        #expect(
            FairClaim.shares(free: 4, cap: 2, reserve: 1, running: [:], heads: heads) == [
                .init(tenantId: "a", count: 2), .init(tenantId: "c", count: 1),
            ])
        // A newcomer takes it.
        let withB = heads + [head("b", runAt: 9)]
        #expect(FairClaim.shares(free: 1, cap: 2, reserve: 1, running: ["a": 2, "c": 1], heads: withB) == [.init(tenantId: "b", count: 1)])
        #expect(FairClaim.shares(free: 1, cap: 2, reserve: 1, running: ["a": 2, "c": 1], heads: heads).isEmpty)
        // A tenant alone may use every slot.
        #expect(FairClaim.shares(free: 4, cap: 4, reserve: 1, running: [:], heads: [head("a", runAt: 1)]) == [.init(tenantId: "a", count: 4)])
        #expect(FairClaim.slots(for: "a", free: 4, cap: 4, reserve: 1, running: [:]) == 4)
        #expect(FairClaim.slots(for: "a", free: 2, cap: 4, reserve: 1, running: ["a": 2]) == 2)
        // Beside another tenant's jobs, the one tenant with due jobs leaves the reserved slot.
        #expect(FairClaim.slots(for: "c", free: 2, cap: 2, reserve: 1, running: ["a": 2, "c": 0]) == 1)
        #expect(FairClaim.slots(for: "c", free: 1, cap: 2, reserve: 1, running: ["a": 2, "c": 1]) == 0)
        #expect(FairClaim.slots(for: "b", free: 1, cap: 2, reserve: 1, running: ["a": 2, "c": 1]) == 1)
    }

    @Test func aTenantWithNothingDueYetGetsNoSlot() {
        let heads = [FairClaim.TenantHead(tenantId: "later", priority: nil, runAt: nil), head("now", runAt: 7)]
        #expect(FairClaim.shares(free: 2, cap: 2, running: [:], heads: heads) == [.init(tenantId: "now", count: 2)])
    }
}
