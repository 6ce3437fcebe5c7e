package org.jasper

import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertInstanceOf
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.io.TempDir
import org.junit.jupiter.api.assertThrows
import java.nio.file.Files
import java.nio.file.Path
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.time.Duration.Companion.seconds

/** A [SecretStore] written in Kotlin, as an app's Android Keystore wrapper would be. */
class MapSecretStore : SecretStore {
    val secrets = ConcurrentHashMap<String, String>()
    override fun kind() = "kotlin-map"
    override fun save(account: String, secret: String) { secrets[account] = secret }
    override fun load(account: String): String? = secrets[account]
    override fun delete(account: String) { secrets.remove(account) }
}

/** An [EventListener] that keeps what it is given (called on an engine thread). */
class Collector : EventListener {
    val events = CopyOnWriteArrayList<Event>()
    override fun onEvent(event: Event) { events += event }
    fun find(predicate: (Event) -> Boolean): Event? = events.firstOrNull(predicate)
}

/**
 * The generated Kotlin (the code the Android AAR ships) on the JVM: two in-process engines
 * exchange messages through three real relays, with events read through both the pull stream
 * and a listener; errors arrive as typed exceptions with stable codes.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ExchangeTest {
    private lateinit var mesh: RelayMesh

    @BeforeAll
    fun startRelays(@TempDir dir: Path) {
        mesh = RelayMesh(dir, 3)
    }

    @AfterAll
    fun stopRelays() = mesh.close()

    private fun config(dir: Path): EngineConfig = defaultConfig(dir.toString()).apply {
        relays = mesh.addresses
        allowPrivateRelays = true
        longPollMs = 2_000u
        pollIntervalMs = 500u
        deliveryTimeoutMs = 4_000u
    }

    private fun received(id: String): (Event) -> Boolean =
        { e -> (e.kind as? EventKind.MessageReceived)?.message?.id == id }

    /** Reads the pull stream from [afterSeq] until an event matches; checks it only moves on. */
    private suspend fun JasperEngine.pullUntil(afterSeq: ULong, predicate: (Event) -> Boolean): Event =
        withTimeout(30.seconds) {
            var after = afterSeq
            var found: Event? = null
            while (found == null) {
                val event = nextEvent(after, 1_000u) ?: continue
                assertTrue(event.seq > after)
                after = event.seq
                if (predicate(event)) found = event
            }
            found
        }

    private suspend fun <T : Any> eventually(check: () -> T?): T = withTimeout(30.seconds) {
        var value = check()
        while (value == null) {
            delay(50)
            value = check()
        }
        value
    }

    @Test
    fun `two engines exchange messages through real relays`(@TempDir dir: Path) = runBlocking {
        val aliceKeys = MapSecretStore()
        val alice = JasperEngine.open(config(dir.resolve("alice")), aliceKeys)
        val bob = JasperEngine.open(config(dir.resolve("bob")), MapSecretStore())
        val (a, b) = listOf(async { alice.createIdentity() }, async { bob.createIdentity() }).map { it.await() }
        assertEquals("kotlin-map", a.keyStore)
        assertNotEquals(a.publicKey, b.publicKey)

        // The private key went to the app's store and is what an explicit export gives.
        val pem = aliceKeys.secrets.values.single()
        assertTrue(pem.startsWith("-----BEGIN PRIVATE KEY-----"))
        assertEquals(pem, alice.exportIdentity())
        val keyBody = pem.lines().drop(1).first()
        Files.walk(dir.resolve("alice")).use { files ->
            files.filter(Files::isRegularFile).forEach { f ->
                assertTrue(keyBody !in String(Files.readAllBytes(f), Charsets.ISO_8859_1), "private key found in $f")
            }
        }

        alice.addContact(b.publicKey, "bob", null)
        bob.addContact(a.publicKey, "alice", null)

        val heard = Collector()
        val subscription = bob.subscribe(0u, heard)

        val sent = alice.send("bob", "hello bob")
        assertEquals(MessageState.QUEUED, sent.state)

        val pulled = bob.pullUntil(0u, received(sent.id))
        val message = (pulled.kind as EventKind.MessageReceived).message
        assertEquals("hello bob", message.content)
        assertEquals(a.publicKey, message.sender)
        assertEquals("alice", message.senderName)
        assertEquals(MessageState.RECEIVED, message.state)

        val listened = eventually { heard.find(received(sent.id)) }
        assertEquals(pulled, listened)
        val seqs = heard.events.map { it.seq }
        assertEquals(seqs.distinct().sorted(), seqs, "listener events out of order or repeated")
        assertEquals(1uL, seqs.first())

        val reply = bob.send("alice", "hi alice")
        val got = alice.pullUntil(0u, received(reply.id))
        assertEquals("hi alice", (got.kind as EventKind.MessageReceived).message.content)

        alice.pullUntil(0u) { e ->
            val k = e.kind
            k is EventKind.MessageStateChanged && k.messageId == sent.id && k.state == MessageState.VISIBLE
        }
        val routes = alice.messageRoutes(sent.id)
        assertEquals(listOf(b.publicKey), routes.map { it.recipient })
        assertTrue(routes.single().relay in mesh.addresses)

        val history = bob.messages("alice", null, 50u).messages.filter { it.id == sent.id || it.id == reply.id }
        assertEquals(listOf("hello bob", "hi alice"), history.map { it.content })
        // Alice's message is unread (bob's own reply never is) until bob marks it; the latest
        // seq names an event of the log (where an app that has loaded its snapshot pulls from).
        assertEquals(1u, bob.resolveConversation("alice").unread)
        assertEquals(0u, bob.markRead("alice", null).unread)
        val latest = bob.latestEventSeq()
        val newest = bob.nextEvent(latest - 1uL, 0u)
        assertEquals(latest, newest?.seq)

        // A cancelled subscription hears nothing more; a new one resumes from its last seq.
        subscription.cancel()
        val last = subscription.lastSeq()
        val count = heard.events.size
        val late = alice.send("bob", "after cancel")
        bob.pullUntil(pulled.seq, received(late.id))
        delay(500)
        assertEquals(count, heard.events.size)
        val resumed = Collector()
        val again = bob.subscribe(last, resumed)
        eventually { resumed.find(received(late.id)) }
        assertTrue(resumed.events.all { it.seq > last })
        again.cancel()

        listOf(subscription, again).forEach { it.close() }
        alice.shutdown()
        bob.shutdown()
        alice.close()
        bob.close()
    }

    @Test
    fun `errors are typed exceptions with stable codes`(@TempDir dir: Path) = runBlocking {
        val config = config(dir.resolve("carol"))
        val engine = JasperEngine.open(config, MapSecretStore())

        val noIdentity = assertThrows<JasperException.NoIdentity> { engine.identity() }
        assertEquals("no_identity", noIdentity.code)
        assertEquals("no_identity", noIdentity.errorCode())

        engine.createIdentity()
        assertThrows<JasperException.IdentityExists> { runBlocking { engine.createIdentity() } }

        val unknown = assertThrows<JasperException.UnknownContact> { runBlocking { engine.createGroup("friends", listOf("dave")) } }
        assertInstanceOf(JasperException::class.java, unknown)
        assertEquals("unknown_contact", unknown.code)
        assertTrue("dave" in unknown.detail)

        assertEquals(
            "unknown_conversation",
            assertThrows<JasperException.UnknownConversation> { runBlocking { engine.send("dave", "hi") } }.code,
        )
        assertEquals(
            "invalid_key",
            assertThrows<JasperException.InvalidKey> { runBlocking { engine.addContact("not a key", "dave", null) } }.code,
        )
        val big = "x".repeat(config.maxMessageBytes.toInt() + 1)
        assertEquals(
            "message_too_large",
            assertThrows<JasperException.MessageTooLarge> { runBlocking { engine.send("dave", big) } }.code,
        )
        assertThrows<JasperException.UnknownMessage> { runBlocking { engine.edit("00000000-0000-0000-0000-000000000000", "x") } }
        val file = Files.writeString(dir.resolve("notes.txt"), "hello")
        assertThrows<JasperException.UnknownConversation> {
            runBlocking { engine.sendWithAttachment("dave", "x", file.toString()) }
        }

        // Whatever the app's store throws becomes a KeyStore error carrying its text.
        val locked = object : SecretStore {
            override fun kind() = "locked"
            override fun save(account: String, secret: String): Unit = throw IllegalStateException("the keystore is locked")
            override fun load(account: String): String? = null
            override fun delete(account: String) {}
        }
        val other = JasperEngine.open(config(dir.resolve("dave")), locked)
        val keyStore = assertThrows<JasperException.KeyStore> { runBlocking { other.createIdentity() } }
        assertEquals("key_store", keyStore.code)
        assertTrue("the keystore is locked" in keyStore.detail, keyStore.detail)

        engine.shutdown()
        assertThrows<JasperException.ShuttingDown> { runBlocking { engine.nextEvent(1uL shl 40, 5_000u) } }
        other.close()
        engine.close()
    }
}
