// swift-tools-version:5.9
// Jasper for iOS and macOS: the generated Swift bindings (Sources/Jasper/Jasper.swift, written
// here by scripts/generate-bindings.sh, the only copy) over the Rust engine, shipped as a static library in JasperFFI.xcframework. Build that first, on a Mac:
// ios/build-xcframework.sh
import PackageDescription

let package = Package(
    name: "Jasper",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Jasper", targets: ["Jasper"]),
    ],
    targets: [
        .target(
            name: "Jasper",
            dependencies: ["JasperFFI"],
            path: "Sources/Jasper"
        ),
        // libjasper_ffi.a per platform, with JasperFFI.h and its module map as headers.
        .binaryTarget(name: "JasperFFI", path: "JasperFFI.xcframework"),
    ]
)
