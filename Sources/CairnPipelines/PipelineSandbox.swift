import CairnFormats
import CairnSandbox
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The hard limits of one sandbox process, applied with `setrlimit(2)` before it reads any of
/// the tenant's data.
struct SandboxLimits: Codable, Sendable, Equatable {
    /// `RLIMIT_DATA`, bytes: the heap, anonymous and private writable mappings (thread stacks
    /// included). Not `RLIMIT_AS`, which also counts the executable's and libraries' code and
    /// address space reserved but never touched (about 1 GiB of a debug `cairn`'s mappings are
    /// code and debug sections), so the same cap would mean different memory per build.
    var memoryBytes: Int64
    /// `RLIMIT_CPU`, seconds of CPU time: SIGXCPU at the soft limit, SIGKILL a second later.
    var cpuSeconds: Int
    /// `RLIMIT_FSIZE`, bytes: the largest file the process may write (work database, SQLite's
    /// temporary files, the output); a write past it ends the process with SIGXFSZ.
    var fileBytes: Int64
    /// `RLIMIT_NOFILE`: descriptors the process may hold.
    var openFiles: Int
}

/// What one sandbox process is asked to do: one phase of one run. It arrives as one line of
/// JSON on the process's standard input; the work files live in its working folder.
struct SandboxOrder: Codable, Sendable {
    /// The phases of a run, each its own process.
    enum Phase: String, Codable, Sendable {
        /// Parse the input file into `input.sqlite`.
        case load
        /// Run the tenant's query over `input.sqlite` into `output`.
        case query
        /// Find the chunks of a large CSV input (`chunkBytes`) and its columns.
        case plan
    }

    /// Which phase.
    var phase: Phase
    /// The run's specification (from its checkpoint).
    var spec: PipelineSpec
    /// The input file, absolute, opened read-only (load only).
    var inputPath: String?
    /// The checkpointed load to resume (load only).
    var resume: LoadState?
    /// The most bytes the output may have (query only).
    var maxOutputBytes: Int64
    /// Wall-clock seconds the query may run (query only).
    var timeoutSeconds: Double
    /// The process's limits.
    var limits: SandboxLimits
    /// Load only: the chunk of a chunked run the input file holds (its bytes only).
    var chunk: ChunkLoad? = nil
    /// Plan only: the chunk size wanted, bytes.
    var chunkBytes: Int64? = nil
    /// Query only: the chunks' databases (in the working folder, in file order), merged into a
    /// fresh `input.sqlite` with these columns before the query runs.
    var merge: [String]? = nil
    /// Query only, with `merge`: the columns of `input`.
    var mergeColumns: [PipelineSpec.Column]? = nil

    /// The work database, in the process's working folder.
    static let databaseName = "input.sqlite"
    /// The output file, in the process's working folder.
    static let outputName = "output"
}

/// One line of JSON the sandbox process writes to its standard output.
struct SandboxReport: Codable, Sendable {
    /// What happened.
    enum Event: String, Codable, Sendable {
        /// The limits are in place and the work begins (`pid`).
        case started
        /// A load batch was committed (`load`): a checkpoint.
        case committed
        /// The work database did not match the checkpoint and is loaded again from the start.
        case restarted
        /// The load is complete (`load`).
        case loaded
        /// Rows written so far (`rows`).
        case rows
        /// The query is complete (`outcome`).
        case queried
        /// The plan is made (`plan`).
        case planned
        /// The phase failed (`kind`, `message`).
        case failed
    }

    /// What happened.
    var event: Event
    /// `started`: the process id.
    var pid: Int32?
    /// `committed`, `loaded`: the load state.
    var load: LoadState?
    /// `rows`: rows written.
    var rows: Int?
    /// `queried`: the outcome.
    var outcome: QueryOutcome?
    /// `planned`: the chunks and columns.
    var plan: ChunkedPlan? = nil
    /// `failed`: `failure` (bad data or a limit: final), a `SandboxError` kind, or `internal`.
    var kind: String?
    /// `failed`: words safe to show the tenant.
    var message: String?
}

/// The `cairn pipeline-sandbox` process: one phase of one pipeline run, under hard limits.
///
/// The server starts it (``SandboxProcess``) with an empty environment, only standard input,
/// output and error open, in the run's own work folder. It reads its ``SandboxOrder`` from
/// standard input, limits itself (memory, CPU time, file size, open files, no core dumps), and
/// writes ``SandboxReport`` lines to standard output. When the server
/// goes away its standard input reaches end of file and the process exits at once.
package enum PipelineSandbox {
    /// The hidden subcommand of `cairn` that runs this mode.
    package static let commandName = "pipeline-sandbox"

    /// Exit status of a sandbox process that reported its own failure.
    static let failedStatus: Int32 = 3

    /// Runs the sandbox mode with this process's standard streams; never returns.
    package static func main() -> Never {
        guard let line = readLine(strippingNewline: true),
            let order = try? JSONDecoder().decode(SandboxOrder.self, from: Data(line.utf8))
        else {
            emit(SandboxReport(event: .failed, kind: "internal", message: "the sandbox process got no work order"))
            exit(2)
        }
        if let problem = limit(order.limits) {
            emit(SandboxReport(event: .failed, kind: "internal", message: problem))
            exit(2)
        }
        watchParent()
        // SQLite's allocations fail (and are reported) well before the process's own cap, which
        // leaves room for the runtime, the thread stacks and the encoders' buffers.
        let baseline = dataBytes()
        SandboxDatabase.limitMemory(heapBytes: (order.limits.memoryBytes - baseline) * 5 / 8)
        emit(SandboxReport(event: .started, pid: getpid()))
        do {
            switch order.phase {
            case .load: try load(order)
            case .query: try query(order)
            case .plan: try plan(order)
            }
            exit(0)
        } catch let failure as PipelineFailure {
            emit(SandboxReport(event: .failed, kind: "failure", message: failure.message))
        } catch let error as SandboxError {
            if error.kind == .memory {
                emit(SandboxReport(event: .failed, kind: "failure", message: memoryMessage(order.limits.memoryBytes)))
            } else {
                emit(SandboxReport(event: .failed, kind: error.kind.rawValue, message: error.message))
            }
        } catch {
            emit(SandboxReport(event: .failed, kind: "internal", message: String(describing: error).prefix(300).description))
        }
        exit(failedStatus)
    }

    /// "memory limit of 512 MiB reached".
    static func memoryMessage(_ bytes: Int64) -> String {
        "memory limit of \(PipelineSettings.describe(bytes: bytes)) reached"
    }

    private static func plan(_ order: SandboxOrder) throws {
        guard let inputPath = order.inputPath, let target = order.chunkBytes else { throw PipelineFailure(message: "the run has no input file") }
        let plan = try PipelineEngine.plan(spec: order.spec, filePath: inputPath, targetBytes: target, control: SandboxControl())
        emit(SandboxReport(event: .planned, plan: plan))
    }

    private static func load(_ order: SandboxOrder) throws {
        guard let inputPath = order.inputPath else { throw PipelineFailure(message: "the run has no input file") }
        let control = SandboxControl()
        let report: (LoadState) -> Void = { emit(SandboxReport(event: .committed, load: $0)) }
        if let chunk = order.chunk {
            // Every attempt of a chunk loads a fresh database: a retry never repeats a row.
            PipelineRunner.removeDatabase(SandboxOrder.databaseName)
            let state = try PipelineEngine.loadChunk(
                spec: order.spec, filePath: inputPath, databasePath: SandboxOrder.databaseName, control: control, chunk: chunk, report: report)
            emit(SandboxReport(event: .loaded, load: state))
            return
        }
        let state: LoadState
        do {
            state = try PipelineEngine.load(
                spec: order.spec, filePath: inputPath, databasePath: SandboxOrder.databaseName, control: control, resume: order.resume, report: report
            )
        } catch is LoadRestart {
            emit(SandboxReport(event: .restarted))
            PipelineRunner.removeDatabase(SandboxOrder.databaseName)
            state = try PipelineEngine.load(
                spec: order.spec, filePath: inputPath, databasePath: SandboxOrder.databaseName, control: control, resume: nil, report: report)
        }
        emit(SandboxReport(event: .loaded, load: state))
    }

    private static func query(_ order: SandboxOrder) throws {
        let limit = order.limits.memoryBytes
        if let pieces = order.merge, let columns = order.mergeColumns {
            try PipelineEngine.merge(pieces, columns: columns, into: SandboxOrder.databaseName, control: SandboxControl())
        }
        let outcome = try PipelineEngine.query(
            spec: order.spec, databasePath: SandboxOrder.databaseName, outputPath: SandboxOrder.outputName, maxBytes: order.maxOutputBytes,
            timeoutSeconds: order.timeoutSeconds, control: SandboxControl(),
            report: { emit(SandboxReport(event: .rows, rows: $0)) },
            admit: { statement in
                // Encoding copies a row's values a few times over (escaping, base64, buffer
                // growth); a row that cannot fit is refused here, not by a failed allocation.
                let bytes = Int64(statement.rowBytes)
                if bytes > 4 << 20, 4 * bytes + (16 << 20) > limit - dataBytes() { throw SandboxError(.memory, "the row is too large") }
            })
        emit(SandboxReport(event: .queried, outcome: outcome))
    }

    // MARK: The process

    /// Applies `limits` to this process; returns the problem when one cannot be applied.
    static func limit(_ limits: SandboxLimits) -> String? {
        func set(_ resource: Int32, soft: Int64, hard: Int64) -> Bool {
            var value = rlimit(rlim_cur: rlim_t(max(0, soft)), rlim_max: rlim_t(max(0, hard)))
            return setrlimit(__rlimit_resource_t(UInt32(resource)), &value) == 0
        }
        let cpu = Int64(limits.cpuSeconds)
        let applied = [
            ("memory", set(Int32(RLIMIT_DATA.rawValue), soft: limits.memoryBytes, hard: limits.memoryBytes)),
            ("CPU time", set(Int32(RLIMIT_CPU.rawValue), soft: cpu, hard: cpu + 1)),
            ("file size", set(Int32(RLIMIT_FSIZE.rawValue), soft: limits.fileBytes, hard: limits.fileBytes)),
            ("open files", set(Int32(RLIMIT_NOFILE.rawValue), soft: Int64(limits.openFiles), hard: Int64(limits.openFiles))),
            ("core dumps", set(Int32(RLIMIT_CORE.rawValue), soft: 0, hard: 0)),
        ]
        if let failed = applied.first(where: { !$0.1 }) { return "the sandbox process could not limit its \(failed.0) (errno \(errno))" }
        // Tenant logic yields the CPU to the server: on a small node a runaway query would
        // otherwise slow every tenant's requests (nice 10, as batch work; setpriority(2)). On
        // Linux a nice value is per thread, so every thread running now gets it, and threads
        // started later inherit it from theirs.
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task"))?.compactMap { id_t($0) } ?? [0]
        for thread in threads where setpriority(__priority_which_t(PRIO_PROCESS.rawValue), thread, sandboxNice) != 0 && errno != ESRCH {
            return "the sandbox process could not lower its CPU priority (errno \(errno))"
        }
        return nil
    }

    /// The sandbox process' nice value: below the server's CPU priority, as batch work.
    static let sandboxNice: Int32 = 10

    /// Ends this process as soon as its standard input reaches end of file: the server that
    /// started it has gone (it keeps the pipe open for as long as it waits for the process).
    private static func watchParent() {
        let thread = Thread {
            var byte: UInt8 = 0
            while true {
                let count = read(0, &byte, 1)
                if count == 0 || (count < 0 && errno != EINTR) { _exit(4) }
            }
        }
        thread.stackSize = 64 << 10
        thread.start()
    }

    /// Bytes counted against `RLIMIT_DATA` now (data and stack pages from `/proc/self/statm`).
    static func dataBytes() -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 5, let pages = Int64(fields[5]) else { return 0 }
        return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Writes one report line to standard output (whole, unbuffered).
    static func emit(_ report: SandboxReport) {
        guard var data = try? JSONEncoder().encode(report) else { return }
        data.append(0x0A)
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let count = write(1, raw.baseAddress! + offset, raw.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    _exit(5)
                }
                offset += count
            }
        }
    }
}
