import CairnJobs

/// The arguments of a `products.import` job: the stored import it upserts. Only
/// `POST /products:import` enqueues it (never `POST /jobs`).
struct ImportProducts: JobArguments {
    static let kind = "products.import"
    static let adminOnly = true

    /// The stored import's id (its rows wait in the catalog's import table).
    var importId: String
    /// `csv` or `ndjson`, as stored with the import.
    var format: String
}
