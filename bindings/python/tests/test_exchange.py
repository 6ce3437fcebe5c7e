"""The generated Python bindings against real relays: two in-process engines exchange messages
through a mesh of three `jasper-relay` processes, with events read through both the pull stream
(`next_event`) and a listener (`subscribe`); errors arrive as typed exceptions with stable codes;
the private key lives in the app's SecretStore (here a Python dict)."""

import asyncio
import os
import threading

import pytest

TIMEOUT = 30  # seconds for anything that crosses the relays


def dict_store(jasper, kind="python-dict"):
    """A SecretStore implemented in Python, keeping secrets in a dict."""

    class DictSecretStore(jasper.SecretStore):
        def __init__(self):
            self.secrets = {}
            self.lock = threading.Lock()

        def kind(self):
            return kind

        def save(self, account, secret):
            with self.lock:
                self.secrets[account] = secret

        def load(self, account):
            with self.lock:
                return self.secrets.get(account)

        def delete(self, account):
            with self.lock:
                self.secrets.pop(account, None)

    return DictSecretStore()


class Collector:
    """An EventListener that keeps what it is given (called on an engine thread)."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def on_event(self, event):
        with self.lock:
            self.events.append(event)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def find(self, predicate):
        return next((e for e in self.snapshot() if predicate(e)), None)


def config(jasper, data_dir, relays):
    cfg = jasper.default_config(str(data_dir))
    cfg.relays = list(relays)
    cfg.allow_private_relays = True
    cfg.long_poll_ms = 2000
    cfg.poll_interval_ms = 500
    cfg.delivery_timeout_ms = 4000
    return cfg


def received(message_id):
    return lambda e: e.kind.is_message_received() and e.kind.message.id == message_id


async def pull_until(engine, after_seq, predicate, what):
    """Reads the pull stream from `after_seq` until an event matches; returns it. Checks on the
    way that the stream only moves forward."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while loop.time() < deadline:
        event = await engine.next_event(after_seq, 1000)
        if event is None:
            continue
        assert event.seq > after_seq
        after_seq = event.seq
        if predicate(event):
            return event
    pytest.fail(f"pull stream: no {what} within {TIMEOUT}s")


async def until(check, what):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while loop.time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {TIMEOUT}s waiting for {what}")


def test_two_engines_exchange_messages_through_real_relays(jasper, relays, tmp_path):
    asyncio.run(_exchange(jasper, relays, tmp_path))


async def _exchange(jasper, relays, tmp_path):
    alice_keys, bob_keys = dict_store(jasper), dict_store(jasper)
    alice = await jasper.JasperEngine.open(config(jasper, tmp_path / "alice", relays), alice_keys)
    bob = await jasper.JasperEngine.open(config(jasper, tmp_path / "bob", relays), bob_keys)
    a, b = await asyncio.gather(alice.create_identity(), bob.create_identity())
    assert a.key_store == "python-dict"
    assert a.public_key != b.public_key

    # The private key went to the app's store, is what an explicit export gives, and is nowhere
    # in the engine's data directory.
    [pem] = alice_keys.secrets.values()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert alice.export_identity() == pem
    key_body = "".join(pem.strip().splitlines()[1:-1]).encode()
    for f in (tmp_path / "alice").rglob("*"):
        if f.is_file():
            assert key_body[:64] not in f.read_bytes(), f"private key found in {f}"

    await alice.add_contact(b.public_key, "bob", None)
    await bob.add_contact(a.public_key, "alice", None)

    # Bob listens from the start of his log, and also reads the pull stream.
    heard = Collector()
    subscription = bob.subscribe(0, heard)

    sent = await alice.send("bob", "hello bob")
    assert sent.state == jasper.MessageState.QUEUED
    assert sent.outgoing

    pulled = await pull_until(bob, 0, received(sent.id), "hello bob on bob's side")
    message = pulled.kind.message
    assert message.content == "hello bob"
    assert message.sender == a.public_key
    assert message.sender_name == "alice"
    assert message.state == jasper.MessageState.RECEIVED

    listened = await until(lambda: heard.find(received(sent.id)), "hello bob at bob's listener")
    assert listened == pulled
    seqs = [e.seq for e in heard.snapshot()]
    assert seqs == sorted(set(seqs)), "the listener got events out of order or twice"
    assert seqs[0] == 1, "subscribe(0) starts at the beginning of the log"

    # The reply, read by Alice from her pull stream.
    reply = await bob.send("alice", "hi alice")
    got = await pull_until(alice, 0, received(reply.id), "the reply on alice's side")
    assert got.kind.message.content == "hi alice"

    # Alice's message reached the mesh: seen on another relay than the one it went through.
    await pull_until(
        alice,
        0,
        lambda e: e.kind.is_message_state_changed()
        and e.kind.message_id == sent.id
        and e.kind.state == jasper.MessageState.VISIBLE,
        "hello bob becoming visible",
    )
    routes = alice.message_routes(sent.id)
    assert [r.recipient for r in routes] == [b.public_key]
    assert routes[0].relay in relays

    history = bob.messages("alice", None, 50).messages
    assert [m.content for m in history if m.id in (sent.id, reply.id)] == ["hello bob", "hi alice"]
    assert {c.name for c in bob.conversations()} == {"alice"}
    # Alice's message is unread (bob's own reply never is) until bob marks the conversation.
    assert bob.resolve_conversation("alice").unread == 1
    assert bob.mark_read("alice", None).unread == 0
    # `latest_event_seq` names an event of the log (the newest): where an app that has just
    # loaded its snapshot starts pulling.
    latest = bob.latest_event_seq()
    newest = await bob.next_event(latest - 1, 0)
    assert newest is not None and newest.seq == latest

    # Resuming the pull stream after an event never gives it again.
    after = await bob.next_event(pulled.seq, 0)
    assert after is None or after.seq > pulled.seq

    # A cancelled subscription hears nothing more; a new one resumes from its last seq.
    subscription.cancel()
    assert subscription.is_cancelled()
    last = subscription.last_seq()
    count = len(heard.snapshot())
    late = await alice.send("bob", "after cancel")
    await pull_until(bob, pulled.seq, received(late.id), "the late message on bob's side")
    await asyncio.sleep(0.5)
    assert len(heard.snapshot()) == count

    resumed = Collector()
    again = bob.subscribe(last, resumed)
    await until(lambda: resumed.find(received(late.id)), "the late message after resuming")
    assert all(e.seq > last for e in resumed.snapshot())
    again.cancel()

    alice.shutdown()
    bob.shutdown()


def test_errors_are_typed_exceptions_with_stable_codes(jasper, relays, tmp_path):
    async def main():
        cfg = config(jasper, tmp_path / "carol", relays)
        engine = await jasper.JasperEngine.open(cfg, dict_store(jasper))

        with pytest.raises(jasper.JasperError.NoIdentity) as err:
            engine.identity()
        assert err.value.code == "no_identity"
        assert err.value.error_code() == "no_identity"

        await engine.create_identity()
        with pytest.raises(jasper.JasperError.IdentityExists):
            await engine.create_identity()

        with pytest.raises(jasper.JasperError.UnknownContact) as err:
            await engine.create_group("friends", ["dave"])
        assert isinstance(err.value, jasper.JasperError)
        assert err.value.code == "unknown_contact"
        assert "dave" in err.value.detail
        assert err.value.error_detail() == err.value.detail

        with pytest.raises(jasper.JasperError.UnknownConversation) as err:
            await engine.send("dave", "hi")
        assert err.value.code == "unknown_conversation"

        with pytest.raises(jasper.JasperError.InvalidKey) as err:
            await engine.add_contact("not a key", "dave", None)
        assert err.value.code == "invalid_key"

        with pytest.raises(jasper.JasperError.MessageTooLarge) as err:
            await engine.send("dave", "x" * (cfg.max_message_bytes + 1))
        assert err.value.code == "message_too_large"

        with pytest.raises(jasper.JasperError.UnknownConversation):
            await engine.send_to_group("nobody", "hi")
        # A key (or a contact's name) is a conversation, but not a group: refused, not sent.
        with pytest.raises(jasper.JasperError.InvalidArgument):
            await engine.send_to_group(engine.identity().public_key, "hi")

        with pytest.raises(jasper.JasperError.UnknownMessage):
            await engine.edit("00000000-0000-0000-0000-000000000000", "x")
        with pytest.raises(jasper.JasperError.InvalidArgument):
            await engine.add_relay("not a relay address")
        with pytest.raises(jasper.JasperError.UnknownRelay):
            await engine.remove_relay("127.0.0.1:1")

        engine.shutdown()
        with pytest.raises(jasper.JasperError.ShuttingDown):
            await engine.next_event(1 << 40, 5000)

    asyncio.run(main())


def test_the_private_key_lives_in_the_apps_secret_store(jasper, relays, tmp_path):
    async def main():
        keys = dict_store(jasper)
        data = tmp_path / "erin"
        engine = await jasper.JasperEngine.open(config(jasper, data, relays), keys)
        info = await engine.create_identity()
        engine.shutdown()
        del engine

        # Reopened with the same store: the same identity, loaded from the store.
        engine = await jasper.JasperEngine.open(config(jasper, data, relays), keys)
        assert engine.identity() == info
        engine.shutdown()

        # A store that lost the key cannot open the directory.
        with pytest.raises(jasper.JasperError.KeyStore) as err:
            await jasper.JasperEngine.open(config(jasper, data, relays), dict_store(jasper))
        assert err.value.code == "key_store"
        assert "missing" in err.value.detail

        # Whatever the app's store throws becomes a KeyStore error carrying its text.
        class LockedStore(jasper.SecretStore):
            def kind(self):
                return "locked"

            def save(self, account, secret):
                raise OSError("the keychain is locked")

            def load(self, account):
                return None

            def delete(self, account):
                pass

        locked = await jasper.JasperEngine.open(
            config(jasper, tmp_path / "frank", relays), LockedStore()
        )
        with pytest.raises(jasper.JasperError.KeyStore) as err:
            await locked.create_identity()
        assert "the keychain is locked" in err.value.detail
        locked.shutdown()

        # The Rust-side memory store, for throwaway identities.
        memory = jasper.memory_secret_store()
        throwaway = await jasper.JasperEngine.open(
            config(jasper, tmp_path / "grace", relays), memory
        )
        assert (await throwaway.create_identity()).key_store == "ephemeral"
        throwaway.shutdown()

    asyncio.run(main())


class Progress:
    """A DownloadListener keeping every (received, total) it hears."""

    def __init__(self):
        self.calls = []

    def on_progress(self, received, total):
        self.calls.append((received, total))


@pytest.mark.skipif(
    not os.environ.get("JASPER_TEST_IPFS_API"),
    reason="needs an IPFS node: JASPER_TEST_IPFS_API (scripts/test.sh starts one)",
)
def test_an_attachment_goes_through_ipfs_and_comes_back_verified(jasper, relays, tmp_path):
    async def main():
        def with_ipfs(cfg):
            cfg.ipfs_api = os.environ["JASPER_TEST_IPFS_API"]
            cfg.ipfs_gateway = os.environ.get("JASPER_TEST_IPFS_GATEWAY")
            return cfg

        alice = await jasper.JasperEngine.open(
            with_ipfs(config(jasper, tmp_path / "alice", relays)), dict_store(jasper)
        )
        bob = await jasper.JasperEngine.open(
            with_ipfs(config(jasper, tmp_path / "bob", relays)), dict_store(jasper)
        )
        a, b = await asyncio.gather(alice.create_identity(), bob.create_identity())
        await alice.add_contact(b.public_key, "bob", None)
        await bob.add_contact(a.public_key, "alice", None)

        original = os.urandom(300_000)
        path = tmp_path / "photo.png"
        path.write_bytes(original)
        sent = await alice.send_with_attachment("bob", "a picture", str(path))
        [attachment] = sent.attachments
        assert (attachment.name, attachment.size, attachment.media_type, attachment.is_image) == (
            "photo.png",
            len(original),
            "image/png",
            True,
        )
        assert sent.content.startswith("a picture")

        got = await pull_until(bob, 0, received(sent.id), "the attachment message on bob's side")
        assert got.kind.message.attachments == sent.attachments

        progress = Progress()
        dest = tmp_path / "received.png"
        result = await bob.download(sent.id, 0, str(dest), progress)
        assert dest.read_bytes() == original
        assert (result.size, result.sha256, result.media_type) == (
            len(original),
            attachment.sha256,
            "image/png",
        )
        assert progress.calls, "no progress reported"
        received_bytes = [r for r, _ in progress.calls]
        assert received_bytes == sorted(received_bytes)
        assert progress.calls[-1][0] == progress.calls[-1][1]

        with pytest.raises(jasper.JasperError.InvalidArgument):
            await bob.download(sent.id, 1, str(tmp_path / "none"), None)
        alice.shutdown()
        bob.shutdown()

    asyncio.run(main())


def test_attachments_without_an_ipfs_node_are_refused(jasper, relays, tmp_path):
    async def main():
        heidi = await jasper.JasperEngine.open(
            config(jasper, tmp_path / "heidi", relays), dict_store(jasper)
        )
        ivan = await jasper.JasperEngine.open(
            config(jasper, tmp_path / "ivan", relays), dict_store(jasper)
        )
        await heidi.create_identity()
        await heidi.add_contact((await ivan.create_identity()).public_key, "ivan", None)
        path = tmp_path / "notes.txt"
        path.write_text("hello")

        # Checked before anything is encrypted or uploaded.
        with pytest.raises(jasper.JasperError.UnknownConversation):
            await heidi.send_with_attachment("dave", "x", str(path))
        with pytest.raises(jasper.JasperError.InvalidArgument) as err:
            await heidi.send_with_attachment("ivan", "x", str(path))
        assert "IPFS" in err.value.detail
        heidi.shutdown()
        ivan.shutdown()

    asyncio.run(main())
