package import CairnStorage

extension PipelineSettings {
    /// Reads the settings that are set, in the `pipeline` scope: `CAIRN_PIPELINE_TIMEOUT`
    /// (a duration), `CAIRN_PIPELINE_THREADS` (1–64), `CAIRN_PIPELINE_MAX_RUNNING_PER_TENANT`
    /// (1–64), `CAIRN_PIPELINE_MEMORY` (a size, 64 MiB–1 TiB), `CAIRN_PIPELINE_CPU` (a duration)
    /// `CAIRN_PIPELINE_MAX_OUTPUT` (a size, 1 KiB–1 PiB) and `CAIRN_PIPELINE_CHUNK` (a size,
    /// 64 KiB–1 TiB).
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        timeoutSeconds = Double(try settings.seconds("timeout", default: Int(timeoutSeconds)))
        threads = try settings.integer("threads", in: 1...64, default: threads)
        if settings.text("max.running.per.tenant") != nil {
            maxRunningPerTenant = try settings.integer("max.running.per.tenant", in: 1...64, default: 1)
        }
        memoryBytes = try settings.bytes("memory", in: (64 << 20)...(1 << 40), default: memoryBytes)
        cpuSeconds = try settings.seconds("cpu", default: cpuSeconds)
        maxOutputBytes = try settings.bytes("max.output", in: (1 << 10)...(1 << 50), default: maxOutputBytes)
        chunkBytes = try settings.bytes("chunk", in: (64 << 10)...(1 << 40), default: chunkBytes)
    }
}
