// Builds the AAR: the generated Kotlin bindings (../bindings/kotlin/generated, the same file
// the JVM tests compile) and libjasper_ffi.so for each ABI, built from the workspace by
// cargo-ndk before the JNI libraries are merged. Needs the Android SDK, the NDK (found through
// ANDROID_NDK_HOME or the SDK), rustup's Android targets and `cargo install cargo-ndk`; see
// README.md.

plugins {
    id("com.android.library") version "8.13.2"
    id("org.jetbrains.kotlin.android") version "2.2.21"
    `maven-publish`
}

group = "org.jasper"
version = "0.1.0"

/** The Cargo workspace this module lives in. */
val workspaceDir: File = rootDir.parentFile
val abis = listOf("arm64-v8a", "armeabi-v7a", "x86_64")
val rustProfile: String = providers.gradleProperty("jasper.rustProfile").getOrElse("mobile")
val rustJniLibs = layout.buildDirectory.dir("rustJniLibs")

android {
    namespace = "org.jasper"
    compileSdk = 36

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += abis }
    }

    sourceSets["main"].apply {
        java.srcDir(File(workspaceDir, "bindings/kotlin/generated"))
        jniLibs.srcDir(rustJniLibs)
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    publishing {
        singleVariant("release") { withSourcesJar() }
    }
}

kotlin {
    compilerOptions { jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17) }
}

dependencies {
    // The bindings' public types extend JNA's (Structure, Pointer): `api`, not `implementation`.
    // The @aar artifact carries libjnidispatch.so for every Android ABI.
    api("net.java.dev.jna:jna:5.19.1@aar")
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.11.0")
}

/** libjasper_ffi.so for every ABI into build/rustJniLibs/<abi>/, through cargo-ndk. */
val buildRust by tasks.registering(Exec::class) {
    group = "build"
    description = "Builds jasper-ffi for $abis with cargo-ndk (profile $rustProfile)"
    workingDir = workspaceDir
    val out = rustJniLibs.get().asFile
    val command = mutableListOf("cargo", "ndk", "--platform", "24", "-o", out.path)
    abis.forEach { command += listOf("-t", it) }
    command += listOf("build", "--locked", "-p", "jasper-ffi", "--profile", rustProfile)
    commandLine(command)
    // Cargo decides what is up to date; Gradle runs it every time and cargo returns at once
    // when nothing changed.
    outputs.upToDateWhen { false }
    outputs.dir(out)
}

tasks.configureEach {
    if (name.startsWith("merge") && name.endsWith("JniLibFolders")) dependsOn(buildRust)
}

publishing {
    publications {
        register<MavenPublication>("release") {
            artifactId = "jasper-android"
            afterEvaluate { from(components["release"]) }
        }
    }
}
