// The Android library module of Jasper: the Rust engine (jasper-ffi) for arm64-v8a,
// armeabi-v7a and x86_64, built with cargo-ndk, plus the generated Kotlin bindings, as an AAR.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "jasper-android"
