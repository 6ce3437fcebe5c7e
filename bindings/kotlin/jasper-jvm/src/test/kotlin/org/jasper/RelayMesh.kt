package org.jasper

import java.io.File
import java.net.ServerSocket
import java.nio.file.Files
import java.nio.file.Path
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit

/**
 * Real `jasper-relay` processes on loopback, each peered with all the others, syncing every
 * second. The binary comes from the `jasper.relay.bin` system property (set by the pom); each
 * relay's log is `relayN/relay.log` under [base].
 */
class RelayMesh(base: Path, count: Int) : AutoCloseable {
    private val processes = mutableListOf<Process>()
    val addresses: List<String>

    init {
        val binary = System.getProperty("jasper.relay.bin")
            ?.takeIf { File(it).canExecute() }
            ?: error("jasper.relay.bin (${System.getProperty("jasper.relay.bin")}) is not an executable jasper-relay: build it first")
        val ports = List(count) { freePort() }
        addresses = ports.map { "127.0.0.1:$it" }
        try {
            ports.forEachIndexed { i, port ->
                val dir = Files.createDirectories(base.resolve("relay$i"))
                val command = mutableListOf(
                    binary,
                    "--listen", "127.0.0.1:$port",
                    "--data-dir", dir.resolve("data").toString(),
                    "--allow-private-peers", "true",
                    "--sync-interval", "1",
                    "--server-sync-interval", "2",
                )
                addresses.filter { it != "127.0.0.1:$port" }.forEach { command += listOf("--peer", it) }
                val process = ProcessBuilder(command)
                    .redirectError(dir.resolve("relay.log").toFile())
                    .also { it.environment()["JASPER_LOG"] = System.getenv("JASPER_TEST_LOG") ?: "info" }
                    .start()
                processes += process
                process.outputStream.close()
                awaitListening(process, dir)
            }
        } catch (e: Throwable) {
            close()
            throw e
        }
    }

    /** The relay prints `listening on ...` on stdout once it serves; the rest is drained. */
    private fun awaitListening(process: Process, dir: Path) {
        val reader = process.inputStream.bufferedReader()
        val first = CompletableFuture.supplyAsync { reader.readLine() ?: "" }
        val line = try {
            first.get(60, TimeUnit.SECONDS)
        } catch (e: Exception) {
            ""
        }
        check("listening on" in line) { "relay did not start (first line '$line'); see ${dir.resolve("relay.log")}" }
        Thread { reader.readText() }.apply { isDaemon = true }.start()
    }

    override fun close() {
        processes.forEach { it.destroy() }
        processes.forEach { p -> if (!p.waitFor(10, TimeUnit.SECONDS)) p.destroyForcibly().waitFor() }
        processes.clear()
    }

    private companion object {
        fun freePort(): Int = ServerSocket(0).use { it.localPort }
    }
}
