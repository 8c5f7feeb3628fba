package import Foundation

/// The resource bundles SwiftPM builds beside the executable (`Cairn_<target>.resources`): the
/// modules' migrations, the console and the OpenAPI document. A deployed `cairn` needs every one
/// of them in its own folder; SwiftPM's accessor stops the process with a trap when one is
/// missing, so `cairn` checks them first and says what to copy.
package enum ResourceBundles {
    /// The targets that have resources the server reads.
    package static let targets = [
        "CairnStorage", "CairnHTTP", "CairnAccounts", "CairnTasks", "CairnJobs", "CairnFiles", "CairnPipelines", "CairnNotifications",
        "CairnConsole", "CairnServer",
    ]

    /// The bundles' folder names (`Cairn_CairnTasks.resources`; `.bundle` on Apple platforms).
    package static var names: [String] {
        #if canImport(Darwin)
            targets.map { "Cairn_\($0).bundle" }
        #else
            targets.map { "Cairn_\($0).resources" }
        #endif
    }

    /// The bundles not in `folder` (by default the running executable's), in ``targets`` order.
    package static func missing(in folder: URL = Bundle.main.bundleURL) -> [String] {
        names.filter { !FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path) }
    }
}
