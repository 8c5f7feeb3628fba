import ArgumentParser
import CairnAccounts
import CairnCatalog
import CairnServer
import CairnStorage
import CairnTasks
import Foundation

/// `cairn seed`: fills a tenant with realistic demo products and tasks, in large batches.
struct Seed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fill a tenant with demo products and tasks (batched; a million rows take seconds to a few minutes).")

    @OptionGroup var options: CommonOptions
    @Option(help: "Tenant id to fill (see `cairn tenant create`).") var tenant: String
    @Option(help: "Products to create (upserted by SKU SEED-n, so re-running updates them).") var products = 0
    @Option(help: "Tasks to create.") var tasks = 0
    @Option(help: "User id recorded as the tasks' creator (default: a fixed seed id).") var user: String?
    @Option(help: "Random seed, for repeatable data.") var randomSeed: UInt64 = 42

    func validate() throws {
        guard products >= 0, products <= 100_000_000, tasks >= 0, tasks <= 100_000_000 else {
            throw ValidationError("--products and --tasks must be from 0 to 100000000")
        }
    }

    func run() async throws {
        try await withComponents(options) { components in
            guard try await components.accounts.store.tenantExists(tenant) else {
                throw ValidationError("no tenant with id \(tenant)")
            }
            var random = SplitMix64(seed: randomSeed)
            let started = ContinuousClock.now
            let productStore = components.catalog.store
            var done = 0
            while done < products {
                let count = min(5000, products - done)
                let now = WallClock.milliseconds()
                let batch = (0..<count).map { offset in
                    DemoData.product(number: done + offset + 1, tenantId: tenant, now: now, random: &random)
                }
                try await productStore.upsert(batch)
                done += count
                if done % 100_000 == 0 || done == products { print("products: \(done)/\(products)") }
            }
            if products > 0 { await components.catalog.invalidate(tenantId: tenant) }
            let creator = user ?? "01900000-0000-7000-8000-000000000000"
            done = 0
            while done < tasks {
                let count = min(10_000, tasks - done)
                let now = WallClock.milliseconds()
                let batch = (0..<count).map { _ in DemoData.task(tenantId: tenant, createdBy: creator, now: now, random: &random) }
                try await components.tasks.insertBatch(batch)
                done += count
                if done % 100_000 == 0 || done == tasks { print("tasks: \(done)/\(tasks)") }
            }
            print("seeded \(products) products and \(tasks) tasks in \(started.duration(to: .now))")
        }
    }
}

/// A small, fast, seedable generator (SplitMix64), so demo data is repeatable.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Word lists for believable names and sentences.
enum DemoData {
    static let adjectives = ["Ergonomic", "Rustic", "Sleek", "Compact", "Durable", "Handmade", "Vintage", "Smart", "Lightweight", "Premium"]
    static let materials = ["Steel", "Oak", "Cotton", "Granite", "Bamboo", "Leather", "Glass", "Wool", "Copper", "Ceramic"]
    static let nouns = ["Chair", "Lamp", "Backpack", "Kettle", "Desk", "Jacket", "Bottle", "Speaker", "Blanket", "Mug"]
    static let categories = ["furniture", "lighting", "bags", "kitchen", "office", "apparel", "outdoor", "audio", "home", "gifts"]
    static let currencies = ["EUR", "USD", "GBP", "CHF"]
    static let colors = ["black", "white", "red", "green", "blue", "grey", "natural"]
    static let verbs = ["Review", "Call", "Update", "Prepare", "Send", "Fix", "Plan", "Check", "Write", "Order"]
    static let objects = [
        "the quarterly report", "supplier invoices", "the website copy", "team offsite", "customer feedback",
        "the release notes", "warehouse stock", "the onboarding guide", "travel bookings", "the budget",
    ]

    static let weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]

    static func pick<T>(_ list: [T], _ random: inout SplitMix64) -> T { list[Int(random.next() % UInt64(list.count))] }

    static func product(number: Int, tenantId: String, now: Int64, random: inout SplitMix64) -> Product {
        let name = "\(pick(adjectives, &random)) \(pick(materials, &random)) \(pick(nouns, &random))"
        let color = pick(colors, &random)
        let description = "A \(name.lowercased()) in \(color), made to last. Ships within \(1 + random.next() % 5) days."
        return Product(
            id: UUIDv7.make(), tenantId: tenantId, sku: "SEED-\(number)", name: name, description: description,
            priceMinor: Int64(99 + random.next() % 99_900), currency: pick(currencies, &random), category: pick(categories, &random),
            stock: Int64(random.next() % 1000), attributes: "{\"color\":\"\(color)\",\"weightGrams\":\(100 + random.next() % 5000)}",
            version: 1, createdAt: now, updatedAt: now)
    }

    static func task(tenantId: String, createdBy: String, now: Int64, random: inout SplitMix64) -> TaskItem {
        let title = "\(pick(verbs, &random)) \(pick(objects, &random))"
        let description: String? =
            random.next() % 4 == 0 ? nil : "Follow up on \(pick(objects, &random)) by \(pick(weekdays, &random))."
        return TaskItem(
            id: UUIDv7.make(), tenantId: tenantId, title: title, description: description, completed: random.next() % 3 == 0,
            createdBy: createdBy, version: 1, createdAt: now, updatedAt: now)
    }
}
