package org.jasper

import java.io.File
import java.nio.file.Files
import java.nio.file.Path
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit

/**
 * Real `jasper-relay` processes on loopback, each peered with all the others, syncing every
 * second, started by the test kit's `jasper-mesh` (the same relay fixture as the Rust tests').
 * The binary comes from the `jasper.mesh.bin` system property (set by the pom); the relay binary
 * it runs from `jasper.relay.bin` when that names one, else the one beside `jasper-mesh`. Each
 * relay's log is `relayN/relay.log` under [base], jasper-mesh's own is `jasper-mesh.log`.
 */
class RelayMesh(base: Path, count: Int) : AutoCloseable {
    private val process: Process
    val addresses: List<String>

    init {
        val binary = System.getProperty("jasper.mesh.bin")
            ?.takeIf { File(it).canExecute() }
            ?: error("jasper.mesh.bin (${System.getProperty("jasper.mesh.bin")}) is not an executable jasper-mesh: build it first (cargo build -p jasper-test --bin jasper-mesh)")
        Files.createDirectories(base)
        val command = mutableListOf(binary, "--relays", count.toString(), "--dir", base.toString())
        System.getProperty("jasper.relay.bin")
            ?.takeIf { File(it).canExecute() }
            ?.let { command += listOf("--relay-bin", it) }
        val log = base.resolve("jasper-mesh.log")
        // Its stdin stays open (our end of the pipe) for as long as the relays are to run: when
        // it closes, in close() or with this JVM, jasper-mesh stops them.
        process = ProcessBuilder(command).redirectError(log.toFile()).start()
        addresses = try {
            parseAddresses(awaitAnnouncement(log))
        } catch (e: Throwable) {
            close()
            throw e
        }
        check(addresses.size == count) { "jasper-mesh announced ${addresses.size} relays, not $count" }
    }

    /** jasper-mesh prints one JSON line once every relay serves, and nothing after it. */
    private fun awaitAnnouncement(log: Path): String {
        val reader = process.inputStream.bufferedReader()
        val first = CompletableFuture.supplyAsync { reader.readLine() ?: "" }
        val line = try {
            first.get(60, TimeUnit.SECONDS)
        } catch (e: Exception) {
            ""
        }
        check(line.startsWith("{")) { "jasper-mesh did not start (first line '$line'); see $log:\n${log.toFile().readText()}" }
        return line
    }

    /** The relays' `"address"` fields, in order (the test classpath has no JSON library). */
    private fun parseAddresses(line: String): List<String> =
        Regex(""""address":"([^"]+)"""").findAll(line).map { it.groupValues[1] }.toList()

    override fun close() {
        process.outputStream.close()
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            process.destroy()
            if (!process.waitFor(10, TimeUnit.SECONDS)) process.destroyForcibly().waitFor()
        }
    }
}
