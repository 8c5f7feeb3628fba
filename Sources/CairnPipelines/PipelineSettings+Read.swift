package import CairnStorage

extension PipelineSettings {
    /// Reads the settings that are set, in the `pipeline` scope: `CAIRN_PIPELINE_TIMEOUT`
    /// (a duration) and `CAIRN_PIPELINE_THREADS` (1–64).
    /// - Throws: `ConfigurationError` naming the first bad one.
    package mutating func read(from settings: SettingsReader) throws {
        timeoutSeconds = Double(try settings.seconds("timeout", default: Int(timeoutSeconds)))
        threads = try settings.integer("threads", in: 1...64, default: threads)
    }
}
