package org.jasper.consumer

import java.io.File
import java.nio.file.Path
import org.jasper.defaultConfig
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir

/**
 * The jar as a dependency: the native library is a resource inside it, which JNA unpacks and
 * loads, with no `jna.library.path` and nothing of the checkout on the classpath.
 */
class InstalledJarTest {
    @Test
    fun `the native library comes from inside the jar`(@TempDir dir: Path) {
        assertNull(System.getProperty("jna.library.path"))
        val resource = org.jasper.JasperEngine::class.java.classLoader
            .getResource("linux-x86-64/libjasper_ffi.so")
        requireNotNull(resource) { "the jar carries linux-x86-64/libjasper_ffi.so" }
        assertEquals("jar", resource.protocol, "loaded from $resource")
        assertTrue(resource.path.contains(".m2/repository/org/jasper/jasper-jvm/"), "from the local repository: $resource")

        // A call into the library loads it.
        val config = defaultConfig(dir.toString())
        assertEquals(dir.toString(), config.dataDir)
        // What the process mapped is JNA's unpacked copy (in a temporary directory, and deleted
        // once loaded), not a file of the build.
        val mapped = File("/proc/self/maps").readLines()
            .map { it.split(Regex("\\s+"), limit = 6).getOrElse(5) { "" } }
            .filter { it.contains("jasper_ffi") || it.contains("/jna") }
            .distinct()
        assertTrue(mapped.isNotEmpty(), "the library is mapped")
        assertTrue(mapped.none { it.contains("/.cache/jasper/target/") }, "mapped: $mapped")
    }
}
