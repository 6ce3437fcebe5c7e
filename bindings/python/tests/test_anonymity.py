"""The anonymity report and strict mode through the Python bindings, against real relays: with
two relays that have both seen the identity's own key, a message to a contact needs a third relay
(RX, own copies, the contact's TX): it waits (`MessageState.WAITING`, with its reason),
`anonymity()` lists the contact as waiting, the change arrives as an `AnonymityChanged` event on
the pull stream, and once a third relay is added the message goes out and arrives."""

import asyncio

import pytest

from test_exchange import config, dict_store, pull_until, received, until


def test_the_config_carries_the_anonymity_mode_and_refuses_a_zero_witness_interval(
    jasper, tmp_path
):
    cfg = jasper.default_config(str(tmp_path / "defaults"))
    assert cfg.anonymity == jasper.AnonymityMode.STRICT
    assert cfg.witness_interval_ms == 2000

    async def main():
        bad = jasper.default_config(str(tmp_path / "bad"))
        bad.witness_interval_ms = 0
        with pytest.raises(jasper.JasperError.InvalidArgument) as err:
            await jasper.JasperEngine.open(bad, dict_store(jasper))
        assert err.value.code == "invalid_argument"
        assert "witness_interval_ms" in err.value.detail

        relaxed = jasper.default_config(str(tmp_path / "relaxed"))
        relaxed.anonymity = jasper.AnonymityMode.RELAXED
        relaxed.witness_interval_ms = 500
        engine = await jasper.JasperEngine.open(relaxed, dict_store(jasper))
        assert engine.config().anonymity == jasper.AnonymityMode.RELAXED
        assert engine.config().witness_interval_ms == 500
        with pytest.raises(jasper.JasperError.NoIdentity) as err:
            engine.anonymity()
        assert err.value.code == "no_identity"
        engine.shutdown()

    asyncio.run(main())


def test_strict_mode_holds_a_message_until_a_third_relay_is_added(jasper, relays, tmp_path):
    asyncio.run(_strict(jasper, relays, tmp_path))


async def _strict(jasper, relays, tmp_path):
    # Alice knows two of the three relays and learns none (they are on loopback).
    cfg = config(jasper, tmp_path / "alice", relays[:2])
    cfg.allow_private_relays = False
    assert cfg.anonymity == jasper.AnonymityMode.STRICT
    alice = await jasper.JasperEngine.open(cfg, dict_store(jasper))
    bob = await jasper.JasperEngine.open(config(jasper, tmp_path / "bob", relays), dict_store(jasper))
    a, b = await asyncio.gather(alice.create_identity(), bob.create_identity())
    await alice.add_contact(b.public_key, "bob", None)
    await bob.add_contact(a.public_key, "alice", None)

    # Both relays see alice's own key first: RX moves off the relay it took and that relay comes
    # back. A relay that has seen one key never carries another, so bob's key has no relay left
    # (without this, bob's copy and the SENT copy would race for the second relay).
    first = await until(alice.rx_relay, "alice's RX relay")
    [second] = [r for r in relays[:2] if r != first]
    await alice.remove_relay(first)
    await until(lambda: alice.rx_relay() == second, "alice's RX relay moving")
    await alice.add_relay(first)
    # The end of alice's event log so far.
    seq = 0
    while True:
        event = await alice.next_event(seq, 0)
        if event is None:
            break
        seq = event.seq

    sent = await alice.send("bob", "held back")
    waiting = await until(
        lambda: (m := alice.message(sent.id)).state == jasper.MessageState.WAITING and m,
        "the message waiting",
    )
    assert waiting.failure, "waiting without a reason"

    report = alice.anonymity()
    assert report.mode == jasper.AnonymityMode.STRICT
    assert report.relays_needed == 3
    assert report.relays_known == 2
    assert report.summary
    assert not report.shared
    [held] = [r for r in report.waiting if r.kind == jasper.RelayRoleKind.TX_CONTACT]
    assert held.key == b.public_key
    assert held.name == "bob"
    assert held.relay is None
    kinds = sorted(r.kind.name for r in report.roles)
    assert kinds == ["RX", "TX_CONTACT", "TX_SELF"]
    assert next(r for r in report.roles if r.kind == jasper.RelayRoleKind.RX).relay == second

    # The report's change is on the pull stream, after the seq read before sending.
    changed = await pull_until(
        alice,
        seq,
        lambda e: e.kind.is_anonymity_changed()
        and any(r.name == "bob" for r in e.kind.report.waiting),
        "an AnonymityChanged event with bob waiting",
    )
    assert changed.kind.report.relays_needed == 3
    await pull_until(
        alice,
        seq,
        lambda e: e.kind.is_message_state_changed()
        and e.kind.message_id == sent.id
        and e.kind.state == jasper.MessageState.WAITING
        and e.kind.failure,
        "the message's WAITING state on the pull stream",
    )
    await asyncio.sleep(2)
    assert not [m for m in bob.messages("alice", None, 50).messages if m.id == sent.id], (
        "the waiting message went out anyway"
    )

    # A third relay: bob's key gets a relay of its own and the message goes out.
    await alice.add_relay(relays[2])
    got = await pull_until(bob, 0, received(sent.id), "the held message on bob's side")
    assert got.kind.message.content == "held back"
    await until(
        lambda: alice.message(sent.id).state
        not in (jasper.MessageState.WAITING, jasper.MessageState.QUEUED),
        "the message out of the outbox",
    )
    after = alice.anonymity()
    assert after.relays_known == 3
    assert not after.waiting
    assert all(r.relay for r in after.roles)

    alice.shutdown()
    bob.shutdown()
