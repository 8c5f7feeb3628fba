import CairnStorage
import Testing

@Suite struct LockKeyTests {
    /// FNV-1a 64 (the published test vectors: "" → cbf29ce484222325, "a" → af63dc4c8601ec8c,
    /// "foobar" → 85944171f73967e8), folded to 63 bits.
    @Test func lockKeysAreFNV1aFoldedTo63Bits() {
        #expect(Database.lockKey("") == 0x4BF2_9CE4_8422_2325)
        #expect(Database.lockKey("a") == 0x2F63_DC4C_8601_EC8C)
        #expect(Database.lockKey("foobar") == 0x0594_4171_F739_67E8)
        #expect(Database.lockKey("files:t1") != Database.lockKey("schedules:t1"))
        #expect(Database.lockKey("files:t1") >= 0)
    }
}
