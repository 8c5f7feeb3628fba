import CairnSandbox

/// Thrown when a run must stop for good because of its data or SQL (never retried).
struct PipelineFailure: Error, CustomStringConvertible, Sendable {
    var message: String
    var description: String { message }
}

/// The synchronous heart of a pipeline run, on a thread of the pipeline pool (never on a
/// Swift concurrency thread): stream the file through its parser into the job-private SQLite
/// database in committed batches, then run the tenant's query into the output file.
enum PipelineEngine {
    /// Row errors kept in checkpoints and results.
    static let maxErrors = 1000
    /// Rows per committed batch (one checkpoint each).
    static let batchRows = 50_000
    /// Records sampled to infer column types.
    static let sampleRecords = 1000
}
