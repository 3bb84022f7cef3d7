"""The multi-tenant memory policy (docs/gateway.md, "What one tenant can learn or
cause"): each line of the policy is demonstrated here, on the memory itself and through
a real gateway on a loopback port (in-process memory and a real ``redis-server``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway_server import GatewayServer, classify, digits_x, gateway_env, new_key
from movingtarget.errors import ConfigError
from movingtarget.gateway.server.config import GatewayConfig
from movingtarget.memory.stores import InProcessStore
from movingtarget.memory.tenancy import TenantMemory, TenantPolicy
from redis_server import running_redis

__all__ = ["digits_x", "gateway_env"]


def memory(quorum: int = 2, trusted: set[int] | None = None, key_capacity: int | None = None):
    policy = TenantPolicy(quorum=quorum, trusted=trusted or set(), key_capacity=key_capacity)
    return TenantMemory(lambda name, cap: InProcessStore(capacity=cap), policy)


def seen(mem: TenantMemory, client: int, keys: list[int], t: int = 0) -> list[bool]:
    arr = np.array(keys, np.uint64)
    return (mem.observe_from(arr, np.full(len(arr), client), np.full(len(arr), t)) > 0).tolist()


# -- the policy, line by line, on the memory ------------------------------------------


def test_a_key_is_always_held_to_its_own_history() -> None:
    for quorum in (0, 1, 2, 5):
        mem = memory(quorum)
        assert seen(mem, 1, [10, 11]) == [False, False]
        assert seen(mem, 1, [10, 11, 12, 12]) == [True, True, False, True]


@pytest.mark.parametrize("quorum", [1, 2, 3])
def test_a_many_account_attacker_gets_at_most_quorum_answers_per_input(quorum: int) -> None:
    mem = memory(quorum)
    answered = [not seen(mem, key, [99])[0] for key in range(1, 7)]
    assert answered == [True] * quorum + [False] * (6 - quorum)


@pytest.mark.parametrize("quorum", [2, 3])
def test_fewer_than_quorum_keys_learn_nothing_about_another_key(quorum: int) -> None:
    # the probe: quorum - 1 attacker keys send x; their answers are the same whether or
    # not the victim (key 1) sent x before
    def probe(victim_sent: bool) -> list[bool]:
        mem = memory(quorum)
        if victim_sent:
            seen(mem, 1, [7])
        return [seen(mem, key, [7])[0] for key in range(100, 100 + quorum - 1)]

    assert probe(True) == probe(False) == [False] * (quorum - 1)
    # and nor can they get the victim refused: its first send is answered
    mem = memory(quorum)
    for key in range(100, 100 + quorum - 1):
        seen(mem, key, [8])
    assert seen(mem, 1, [8]) == [False]


def test_quorum_colluding_keys_can_probe_an_untrusted_key() -> None:
    # the stated limit: quorum keys together see the victim's input as a repeat
    mem = memory(2)
    seen(mem, 1, [7])
    assert [seen(mem, key, [7])[0] for key in (100, 101)] == [False, True]


def test_trusted_keys_are_private_and_cannot_be_denied() -> None:
    mem = memory(1, trusted={1})
    seen(mem, 1, [5])  # the trusted victim sends 5
    assert [seen(mem, key, [5])[0] for key in range(100, 110)] == [False] + [True] * 9
    # ten attacker keys together still see 5 only as each other's repeat: the first of
    # them was answered, so the victim's send revealed nothing; and the victim, sending
    # what the attackers pre-submitted, is answered
    assert seen(mem, 1, [6]) == [False]
    for key in range(100, 110):
        seen(mem, key, [9])
    assert seen(mem, 1, [9]) == [False]
    assert seen(mem, 1, [9]) == [True]  # its own repeat is still caught


def test_one_keys_flood_does_not_evict_another_keys_history() -> None:
    mem = memory(2, key_capacity=1000)
    victim = list(range(1, 51))
    seen(mem, 1, victim, t=0)
    for t in range(10):  # 1,000 distinct inputs from another key
        seen(mem, 2, list(range(1000 + 100 * t, 1100 + 100 * t)), t=1 + t)
    assert all(seen(mem, 1, victim, t=20))


def test_quorum_zero_keeps_no_shared_pool() -> None:
    mem = memory(0)
    seen(mem, 1, [3])
    assert [seen(mem, key, [3])[0] for key in range(2, 6)] == [False] * 4
    assert mem.shared is not None and len(mem.shared) == 0


def test_bad_policies_are_one_clear_message() -> None:
    with pytest.raises(ConfigError, match="quorum must be an integer >= 0"):
        TenantPolicy(quorum=-1)
    with pytest.raises(ConfigError, match="key_capacity must be an integer >= 1"):
        TenantPolicy(key_capacity=0)
    with pytest.raises(ConfigError, match="--cross-key-quorum must be >= 0"):
        GatewayConfig(cross_key_quorum=-2).check()
    with pytest.raises(ConfigError, match="bloom:// remembers whether"):
        GatewayConfig(store="bloom://").check()
    GatewayConfig(store="bloom://", cross_key_quorum=1).check()


# -- through a real gateway ---------------------------------------------------------


def reasons(url: str, token: str, x: np.ndarray) -> list[str]:
    r = classify(url, token, x)
    assert r.status_code == 200, r.text
    return [a["reason"] for a in r.json()["answers"]]


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest):
    if request.param == "memory":
        yield "memory://"
        return
    with running_redis() as redis:
        yield redis.url


def test_gateway_membership_probe_denial_and_many_accounts(
    tmp_path: Path, gateway_env, digits_x, store: str
) -> None:
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    victim, a1, a2, a3 = (new_key(keys, n, rate=0) for n in ("victim", "a1", "a2", "a3"))
    args = ("--keys-db", keys, "--store", store, "--trusted-key", "boss")
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        url = server.url
        x = digits_x[:5]
        assert reasons(url, victim, x) == ["model"] * 5
        # (a) one other key learns nothing: answered as if nobody had sent x (this key
        # used to get "repeat" for an input only the victim sent)
        assert reasons(url, a1, x) == ["model"] * 5
        # the many-account attacker: the third distinct key is refused (quorum 2)
        assert reasons(url, a2, x) == ["repeat"] * 5
        assert reasons(url, a3, x) == ["repeat"] * 5
        # own repeats are caught as before
        assert reasons(url, victim, x) == ["repeat"] * 5
        # (b) pre-submission: one key sends what the victim will send; the victim is
        # answered
        y = digits_x[10:15]
        assert reasons(url, a1, y) == ["model"] * 5
        assert reasons(url, victim, y) == ["model"] * 5
    banner = (tmp_path / "serve.log").read_text()
    assert "memory policy: each key's own history (<= 100,000 entries per key)" in banner
    assert "once 2 other key(s) sent the input" in banner
    assert "queries kept for 86400 s after first seen" in banner


def test_gateway_trusted_key_is_private_and_cannot_be_denied(
    tmp_path: Path, gateway_env, digits_x
) -> None:
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    boss = new_key(keys, "boss", rate=0)
    attackers = [new_key(keys, f"a{i}", rate=0) for i in range(3)]
    args = ("--keys-db", keys, "--trusted-key", "boss")
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        url = server.url
        x = digits_x[20:24]
        assert reasons(url, boss, x) == ["model"] * 4
        # three colluding keys: the first two are answered, as if boss had sent nothing
        got = [reasons(url, a, x)[0] for a in attackers]
        assert got == ["model", "model", "repeat"]
        # pre-submitted by three keys, a trusted key's input is still answered
        y = digits_x[30:34]
        for a in attackers:
            reasons(url, a, y)
        assert reasons(url, boss, y) == ["model"] * 4
        assert reasons(url, boss, y) == ["repeat"] * 4


def test_gateway_eviction_flood_spares_other_keys(
    tmp_path: Path, gateway_env, digits_x, store: str
) -> None:
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    first, flooder = new_key(keys, "first", rate=0), new_key(keys, "flooder", rate=0)
    args = ("--keys-db", keys, "--store", store)
    args += ("--memory-capacity", "1000", "--memory-key-capacity", "1000")
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        url = server.url
        mine = digits_x[:50]
        assert reasons(url, first, mine) == ["model"] * 50
        flood = digits_x[100:1100]
        for lo in range(0, 1000, 250):
            reasons(url, flooder, flood[lo : lo + 250])
        # 50 of 50 repeats caught (with one global bounded memory: 0 of 50)
        assert reasons(url, first, mine) == ["repeat"] * 50


def test_bad_memory_flags_are_one_line(tmp_path: Path, gateway_env) -> None:
    for flags, message in [
        (["--cross-key-quorum", "-1"], "--cross-key-quorum must be >= 0"),
        (["--memory-ttl", "-5"], "--memory-ttl must be >= 0"),
        (["--store", "bloom://"], "bloom:// remembers whether"),
        (["--repair-window", "0"], "--repair-window must be an integer >= 1, got 0"),
        (["--labeler-key", " "], "--labeler-key must name a key"),
    ]:
        cmd = [sys.executable, "-m", "movingtarget", "serve", "--keys-db"]
        cmd += [f"sqlite:///{tmp_path / 'k.db'}", *flags]
        out = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **gateway_env}, timeout=120
        )
        assert out.returncode == 2, out.stderr
        assert message in out.stderr and "Traceback" not in out.stderr


def test_the_gateway_takes_its_shared_pools_at_start_and_lets_key_histories_grow(
    digits_x: np.ndarray,
) -> None:
    """Each in-process shared pool holds the full table of its stated bound from the start
    (serving never grows it nor faults its pages in, and the start-up line says how much
    it holds); a key's own history starts small and grows with that key's use."""
    from movingtarget.gateway.server.service import build_served_defense, memory_banner
    from movingtarget.gateway.server.serving import load_served_model

    config = GatewayConfig(defense="memorize-abstain", memory_capacity=10_000)
    defense = build_served_defense(config, load_served_model("digits:logistic"))
    memory = defense.mechanisms[0].store
    assert isinstance(memory, TenantMemory)
    shared = memory.shared
    assert isinstance(shared, InProcessStore) and len(shared._keys) == 32_768
    x = digits_x[:3]
    defense.answer(x, np.array([7, 7, 7]), np.arange(3))
    own = memory._own_store(7)
    assert isinstance(own, InProcessStore) and own.nbytes == 1024 * 24 + 1024 * 16
    assert "shared pools hold 1 MiB" in memory_banner(config, TenantPolicy(), defense)
    big = GatewayConfig(defense="memorize-abstain", memory_capacity=1_000_000)
    banner = memory_banner(
        big, TenantPolicy(), build_served_defense(big, load_served_model("digits:logistic"))
    )
    assert "shared pools hold 65 MiB in this process" in banner
