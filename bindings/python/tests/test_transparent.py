"""Transparent mode through the Python bindings: two in-process engines consent, a WebRTC session
comes up through signaling over real relays (STUN: a real coturn on loopback), a message goes over
the data channel, and a call carries Opus frames both ways through `send_audio_frame` and
`next_audio_frame` until hang-up ends it on both sides."""

import asyncio
import os
import shutil
import socket
import subprocess
import time

import pytest

from test_exchange import config, dict_store, until

FRAMES = [f"opus-{i:02}".encode() for i in range(30)]


def free_tcp_and_udp_port():
    """A loopback port free for both TCP and UDP at this moment."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def stun_answers(port, deadline):
    """Whether a STUN server on the port answers a Binding request before the deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            probe.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12), ("127.0.0.1", port))
            try:
                if probe.recv(512)[:2] == b"\x01\x01":
                    return True
            except (socket.timeout, ConnectionRefusedError):
                pass
    return False


@pytest.fixture()
def stun_url(tmp_path):
    if shutil.which("turnserver") is None:
        pytest.fail("turnserver (Debian package coturn) is needed: scripts/test.sh installs it")
    # A port can be free for UDP and taken for TCP (a relay's), which coturn also binds, so a
    # start that does not answer is retried on another port.
    for _attempt in range(3):
        port = free_tcp_and_udp_port()
        proc = subprocess.Popen(
            ["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--simple-log",
             "--listening-ip", "127.0.0.1", "--listening-port", str(port),
             "--log-file", str(tmp_path / f"coturn-{port}.log"),
             "--pidfile", str(tmp_path / f"coturn-{port}.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if stun_answers(port, deadline=time.monotonic() + 10):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("coturn did not answer STUN on three ports")
    yield f"stun:127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def test_transparent_session_message_and_call(jasper, relays, stun_url, tmp_path):
    asyncio.run(_transparent(jasper, relays, stun_url, tmp_path))


async def _transparent(jasper, relays, stun_url, tmp_path):
    engines = []
    for name in ("alice", "bob"):
        cfg = config(jasper, tmp_path / name, relays)
        cfg.stun_servers = [stun_url]
        cfg.webrtc_bind_addrs = ["127.0.0.1:0"]
        engines.append(await jasper.JasperEngine.open(cfg, dict_store(jasper)))
    alice, bob = engines
    a, b = await asyncio.gather(alice.create_identity(), bob.create_identity())
    await alice.add_contact(b.public_key, "bob", None)
    await bob.add_contact(a.public_key, "alice", None)
    assert "IP address" in jasper.transparent_mode_warning()

    # Calls need consent on both sides first.
    with pytest.raises(jasper.JasperError.TransparentOff) as refused:
        await alice.start_call("bob")
    assert refused.value.error_code() == "transparent_off"

    assert (await alice.set_transparent("bob", True)).state == jasper.TransparentState.WAITING_FOR_PEER
    await bob.set_transparent("alice", True)
    await until(
        lambda: alice.transparent_status("bob").state == jasper.TransparentState.CONNECTED
        and bob.transparent_status("alice").state == jasper.TransparentState.CONNECTED,
        "the transparent session",
    )

    sent = await alice.send("bob", "direct")
    await until(
        lambda: any(m.id == sent.id for m in bob.messages("alice", None, 10).messages),
        "the direct message",
    )
    await until(
        lambda: any(r.relay == "webrtc" for r in alice.message_routes(sent.id)),
        "the message to be marked delivered over the data channel",
    )
    assert bob.transparent_status("alice").direct_received == 1

    call = await alice.start_call("bob")
    assert call.state == jasper.CallState.RINGING and call.outgoing
    incoming = await until(lambda: next((c for c in bob.calls() if c.id == call.id), None), "ringing")
    assert not incoming.outgoing and incoming.contact_name == "alice"
    with pytest.raises(jasper.JasperError.CallState):
        await alice.send_audio_frame(call.id, b"early", 20_000)
    await bob.accept_call(call.id)
    await until(lambda: alice.calls()[0].state == jasper.CallState.ACTIVE, "the call to be answered")
    with pytest.raises(jasper.JasperError.InvalidArgument):
        await alice.send_audio_frame(call.id, b"x", 7_000)

    for frame in FRAMES:
        await alice.send_audio_frame(call.id, frame, 20_000)
    await bob.send_audio_frame(call.id, b"reply", 20_000)
    heard = []
    while len(heard) < len(FRAMES):
        frame = await bob.next_audio_frame(call.id, 5000)
        assert frame is not None, f"only {len(heard)} frames arrived"
        heard.append(frame)
    assert [f.opus for f in heard] == FRAMES
    assert all(y.sequence == x.sequence + 1 for x, y in zip(heard, heard[1:]))
    back = await alice.next_audio_frame(call.id, 5000)
    assert back is not None and back.opus == b"reply"

    # The newest reader of a call's audio takes it over, as a newer gRPC Audio stream does: a
    # wait still pending elsewhere ends with CallState instead of taking the next frame.
    older = asyncio.ensure_future(bob.next_audio_frame(call.id, 10_000))
    await asyncio.sleep(0.3)
    newer = asyncio.ensure_future(bob.next_audio_frame(call.id, 10_000))
    with pytest.raises(jasper.JasperError.CallState):
        await older
    await alice.send_audio_frame(call.id, b"to the newest", 20_000)
    taken = await newer
    assert taken is not None and taken.opus == b"to the newest"

    await alice.hang_up(call.id)
    await until(
        lambda: next(c for c in bob.calls() if c.id == call.id).end_reason == "remote_hung_up",
        "the hang-up to reach bob",
    )
    with pytest.raises(jasper.JasperError.CallState):
        await bob.next_audio_frame(call.id, 100)
    alice.shutdown()
    bob.shutdown()
