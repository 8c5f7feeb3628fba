import CairnFuzz
import Foundation

#if CAIRN_LIBFUZZER
    /// The target this libFuzzer process fuzzes, from `CAIRN_FUZZ_TARGET`.
    let selectedTarget: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["CAIRN_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            fatalError("CAIRN_FUZZ_TARGET must be one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return target
    }()

    /// libFuzzer's entry point: one input of `size` bytes at `data`.
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        selectedTarget.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }

    /// libFuzzer's driver (LLVM 12 and later): parses libFuzzer's flags from the command line
    /// and calls `callback` once per input.
    @_silgen_name("LLVMFuzzerRunDriver")
    func runLibFuzzer(
        _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    /// The process entry point. SwiftPM links executables with `main` defined as
    /// `<product>_main` (so tests can import them), which keeps libFuzzer's own `main` out;
    /// this one hands the command line to libFuzzer's driver instead.
    @_cdecl("cairn_fuzz_main")
    func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
        var argc = argc
        var argv = argv
        return runLibFuzzer(&argc, &argv, fuzzOneInput)
    }
#else
    /// Replays fuzz inputs without libFuzzer (regressions in plain builds):
    /// `cairn-fuzz <target> <file or folder>...` or `cairn-fuzz --all <root>...`, where a root holds
    /// one folder per target (`Fuzz/corpus`, `Fuzz/regressions`).
    @main
    struct CairnFuzzReplay {
        static func main() throws {
            var arguments = Array(CommandLine.arguments.dropFirst())
            guard let first = arguments.first else {
                print("usage: cairn-fuzz <target> <file|folder>... | cairn-fuzz --all <root>...")
                print("targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
                exit(2)
            }
            arguments.removeFirst()
            if first == "--all" {
                for root in arguments {
                    let counts = try FuzzTarget.replay(root: root)
                    for (target, count) in counts.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                        print("\(root)/\(target.rawValue): \(count) inputs ok")
                    }
                }
                return
            }
            guard let target = FuzzTarget(rawValue: first) else {
                print("unknown target \(first); targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
                exit(2)
            }
            var count = 0
            for path in arguments {
                var isFolder: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: path, isDirectory: &isFolder)
                let files = isFolder.boolValue ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { path + "/" + $0 } : [path]
                for file in files {
                    target.run(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
                    count += 1
                }
            }
            print("\(target.rawValue): \(count) inputs ok")
        }
    }
#endif
