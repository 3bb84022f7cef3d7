"""Serving the dynamic defense: ``serve --defense dynamic`` around a pool, its schedule
keyed by the operator's secret, corrections and the labeling queue in ``--store``.

Real servers (``movingtarget serve`` subprocesses on loopback sockets), a real SQLite
file and a real ``redis-server``; nothing mocked. The exploited mistake is a digit every
member of the served pool gets wrong (found on an exact copy of the pool, as the
screening attacker finds it), so the moving target serves it wrongly whichever member
its schedule draws.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway_server import GatewayServer, auth, classify, gateway_env, new_key
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.defenses.moving_target import MovingTarget
from movingtarget.errors import ConfigError
from movingtarget.gateway.process import running
from movingtarget.gateway.server.config import GatewayConfig
from movingtarget.gateway.server.service import build_served_defense
from movingtarget.gateway.server.serving import ServedModel, load_served_model
from redis_server import running_redis

__all__ = ["gateway_env"]

SECRET = "b7c1d0e4a9f2385c6e1f0a7b3d9c2e84"


@pytest.fixture(scope="module")
def pool(gateway_env: dict[str, str]) -> ServedModel:
    """The served pool (``digits:pool``), from the session's model cache: the gateways
    load the very same one."""
    return load_served_model("digits:pool", cache_dir=gateway_env["MOVINGTARGET_CACHE"])


@pytest.fixture(scope="module")
def mistakes(pool: ServedModel) -> list[tuple[np.ndarray, int, int]]:
    """Digits every pool member gets wrong, the same wrong class: (x, truth, served)."""
    data = load_dataset("digits")
    votes = pool.model.member_proba(data.x).argmax(axis=2)  # type: ignore[attr-defined]
    unanimous = (votes == votes[0]).all(axis=0) & (votes[0] != data.y)
    return [(data.x[[i]], int(data.y[i]), int(votes[0, i])) for i in np.flatnonzero(unanimous)]


@pytest.fixture(scope="module")
def mistake(mistakes: list[tuple[np.ndarray, int, int]]) -> tuple[np.ndarray, int, int]:
    return mistakes[0]


def _near(x: np.ndarray, seed: int) -> np.ndarray:
    # the noisy-repeat attacker's step: uniform noise of 4/255 of the data's range
    noise = np.random.default_rng(seed).uniform(-4 / 255, 4 / 255, x.shape)
    return np.clip(x + noise, 0, 1).astype(np.float32)


def _answer(url: str, token: str, x: np.ndarray) -> dict:
    r = classify(url, token, x)
    assert r.status_code == 200, r.text
    return r.json()["answers"][0]


def _label(url: str, token: str, qid: str, label: int) -> httpx.Response:
    body = {"labels": [{"query_id": qid, "label": label}]}
    return httpx.post(f"{url}/v1/feedback", json=body, headers=auth(token))


def _queue(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/labeling-queue", headers=auth(token))


def _secret_file(tmp_path: Path, secret: str = SECRET) -> str:
    path = tmp_path / "secret"
    path.write_text(secret + "\n")
    path.chmod(0o600)  # as an operator keeps it (readable by others: a warning line)
    return str(path)


def _dynamic_args(keys: str, store: str, secret_file: str) -> tuple[str, ...]:
    # each key held to its own history (quorum 0): fresh keys see only the defense's
    # answer to the input itself, never a cross-key refusal
    return (
        "--model", "digits:pool", "--defense", "dynamic", "--store", store,
        "--keys-db", keys, "--secret-file", secret_file, "--labeler-key", "labeler",
        "--cross-key-quorum", "0",
    )  # fmt: skip


def _exploit(url: str, token: str, x: np.ndarray, truth: int) -> tuple[dict, dict]:
    """The attacker's mistake, answered wrongly, then its repeat, refused and asked."""
    first = _answer(url, token, x)
    assert first["label"] != truth and first["reason"] == "model", first
    repeat = _answer(url, token, x)
    assert repeat["abstained"] and repeat["reason"] == "repeat", repeat
    return first, repeat


def _corrected(url: str, keys: str, name: str, x: np.ndarray, truth: int, seed: int) -> None:
    """A fresh key's exact repeat and near repeat of ``x`` are answered ``truth``."""
    token = new_key(keys, name, rate=0)
    for query in (x, _near(x, seed)):
        a = _answer(url, token, query)
        assert a["label"] == truth and a["reason"] == "corrected", a


def test_a_labelers_correction_survives_a_restart_on_sqlite(
    tmp_path: Path, gateway_env: dict[str, str], mistakes: list[tuple[np.ndarray, int, int]]
) -> None:
    """The dynamic gateway on a SQLite store: an attacker's exploited mistake is answered
    wrongly, its repeat refused and queued for a label; the attacker's own label (a
    non-labeler key) changes no answer, and the queue is closed to it (403, the same body
    whether the queue holds anything or not). The labeler reads the repeat from the queue
    and labels it; from then on every key's exact and near repeats get the true class,
    reason ``corrected`` — and still after the gateway restarts on the same store. A
    second mistake's repeat, queued before the restart, is still in the queue after it,
    and the labeler's label for it (its input now only in the store) corrects it too."""
    (x, truth, wrong), (x2, truth2, _) = mistakes[0], mistakes[1]
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    store = f"sqlite:///{tmp_path / 'memory.db'}"
    attacker, labeler = new_key(keys, "attacker", rate=0), new_key(keys, "labeler", rate=0)
    server = GatewayServer(
        *_dynamic_args(keys, store, _secret_file(tmp_path)),
        env=gateway_env,
        log=tmp_path / "serve.log",
    )
    with server:  # closed on leaving, restarted inside
        url = server.url
        closed = _queue(url, attacker)
        assert closed.status_code == 403
        empty = _queue(url, labeler).json()
        assert empty == {"pending": 0, "queries": []}
        first, repeat = _exploit(url, attacker, x, truth)
        assert first["label"] == wrong
        # the attacker labels its own queries (the truth, and a lie): stored, never learned
        for qid, label in ((first["query_id"], truth), (repeat["query_id"], (truth + 1) % 10)):
            r = _label(url, attacker, qid, label)
            assert r.status_code == 200 and r.json() == {"stored": 1, "learned": 0}
        other = new_key(keys, "other", rate=0)
        unchanged = _answer(url, other, x)
        assert unchanged["label"] == wrong and unchanged["reason"] == "model", unchanged
        # the queue holds the repeat now; the attacker is told exactly what it was before
        again = _queue(url, attacker)
        assert again.status_code == 403 and again.content == closed.content
        assert repeat["query_id"] not in again.text
        queued = _queue(url, labeler).json()
        asked = {q["query_id"]: q for q in queued["queries"]}
        assert repeat["query_id"] in asked and asked[repeat["query_id"]]["reason"] == "repeat"
        assert np.array_equal(np.float32(asked[repeat["query_id"]]["input"]), x[0])
        assert first["query_id"] not in asked  # answered, not asked
        r = _label(url, labeler, repeat["query_id"], truth)
        assert r.status_code == 200 and r.json() == {"stored": 1, "learned": 1}
        assert repeat["query_id"] not in _queue(url, labeler).text  # labeled: off the queue
        _corrected(url, keys, "after-label", x, truth, seed=1)
        _, later = _exploit(url, new_key(keys, "attacker-2", rate=0), x2, truth2)
        server.stop()
        server.start()  # the same store, secret and port: a new process
        _corrected(server.url, keys, "after-restart", x, truth, seed=2)
        kept = [q["query_id"] for q in _queue(server.url, labeler).json()["queries"]]
        assert later["query_id"] in kept and repeat["query_id"] not in kept
        r = _label(server.url, labeler, later["query_id"], truth2)
        assert r.status_code == 200 and r.json() == {"stored": 1, "learned": 1}
        _corrected(server.url, keys, "second-after-restart", x2, truth2, seed=5)


def test_replicas_sharing_redis_share_the_queue_and_the_corrections(
    tmp_path: Path, gateway_env: dict[str, str], mistake: tuple[np.ndarray, int, int]
) -> None:
    """Two replicas on one Redis: the mistake exploited on replica A is in the labeling
    queue replica B shows; the labeler labels it through B; A then answers its exact and
    near repeats correctly (reason ``corrected``) for every key."""
    x, truth, _ = mistake
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    attacker, labeler = new_key(keys, "attacker", rate=0), new_key(keys, "labeler", rate=0)
    secret = _secret_file(tmp_path)
    with running_redis() as redis:
        args = _dynamic_args(keys, redis.url, secret)
        a = GatewayServer(*args, "--replica", "a", env=gateway_env, log=tmp_path / "a.log")
        b = GatewayServer(*args, "--replica", "b", env=gateway_env, log=tmp_path / "b.log")
        with running(a, b):
            _, repeat = _exploit(a.url, attacker, x, truth)
            assert _queue(b.url, attacker).status_code == 403
            queued = _queue(b.url, labeler).json()
            assert repeat["query_id"] in [q["query_id"] for q in queued["queries"]]
            r = _label(b.url, labeler, repeat["query_id"], truth)
            assert r.status_code == 200 and r.json() == {"stored": 1, "learned": 1}
            _corrected(a.url, keys, "on-a", x, truth, seed=3)
            _corrected(b.url, keys, "on-b", x, truth, seed=4)


def test_the_labeling_queue_reads_an_outage_as_503(
    tmp_path: Path, gateway_env: dict[str, str]
) -> None:
    """A bad ``limit`` is one 400; with its Redis gone, the queue answers a labeler 503
    with nothing internal (no address, no store named); a non-labeler is still told only
    403."""
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    attacker, labeler = new_key(keys, "attacker", rate=0), new_key(keys, "labeler", rate=0)
    with running_redis() as redis:
        args = _dynamic_args(keys, redis.url, _secret_file(tmp_path))
        server = GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log")
        with server:
            assert _queue(server.url, labeler).status_code == 200
            for bad in ("0", "1001", "x", "9" * 5000, "²"):
                r = httpx.get(
                    f"{server.url}/v1/labeling-queue", params={"limit": bad}, headers=auth(labeler)
                )
                assert r.status_code == 400 and "limit must be an integer in [1, 1000]" in r.text
            redis.stop()
            down = _queue(server.url, labeler)
            assert down.status_code == 503 and down.headers["retry-after"]
            assert down.json() == {
                "error": "the service is unavailable; retry later",
                "type": "unavailable",
                "status": 503,
            }
            assert _queue(server.url, attacker).status_code == 403


def test_the_schedule_follows_the_operators_secret(
    monkeypatch: pytest.MonkeyPatch, pool: ServedModel
) -> None:
    """At the defense level, as the gateway builds it (the served defense's own schedule
    over one set of arrival times): the same secret reproduces the members chosen, another
    secret chooses differently, neither is the schedule a seed would draw, and without a
    secret the defense is not built."""
    config = GatewayConfig(model="digits:pool", defense="moving-target-abstain")
    times = np.arange(1_700_000_000_000, 1_700_000_002_000)

    def schedule(secret: str | None) -> np.ndarray:
        if secret is None:
            monkeypatch.delenv("MOVINGTARGET_SECRET", raising=False)
        else:
            monkeypatch.setenv("MOVINGTARGET_SECRET", secret)
        defense = build_served_defense(config, pool)
        mover = next(m for m in defense.mechanisms if isinstance(m, MovingTarget))
        return mover.choose(times, 5)

    a, a_again, b = schedule(SECRET), schedule(SECRET), schedule(SECRET[::-1])
    assert np.array_equal(a, a_again)
    assert (a == b).mean() < 0.4  # independent schedules agree on about 1/K = 0.2
    seeded = build_defense("moving-target-abstain", pool.model, seed=0)
    drawn = next(m for m in seeded.mechanisms if isinstance(m, MovingTarget))
    assert (a == drawn.choose(times, 5, np.random.default_rng(0))).mean() < 0.4
    with pytest.raises(ConfigError, match="needs a secret from the operator"):
        schedule(None)


def test_bad_dynamic_flags_are_one_line(tmp_path: Path, gateway_env: dict[str, str]) -> None:
    good = _secret_file(tmp_path)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    short = tmp_path / "short"
    short.write_text("0123456789\n")
    pool_flags = ["--model", "digits:pool", "--defense", "dynamic"]
    bloom = ["--store", "bloom://", "--cross-key-quorum", "1", "--labeler-key", "l"]
    readable = tmp_path / "readable"
    readable.write_text(SECRET)
    readable.chmod(0o644)
    for flags, message in [
        ([*pool_flags, "--secret-file", str(tmp_path / "none")], "--secret-file"),
        ([*pool_flags, "--secret-file", str(empty)], "is empty"),
        ([*pool_flags, "--secret-file", str(short)], "needs at least 16"),
        ([*pool_flags, "--secret-file", str(tmp_path)], "a directory, not a file"),
        (pool_flags, "needs a secret from the operator"),
        (
            ["--model", "digits:logistic", "--defense", "dynamic", "--secret-file", good],
            "--model digits:logistic is not one: serve a pool",
        ),
        (
            ["--model", "digits:pool", "--defense", "moving-target(secret=abc)"],
            "puts the schedule's secret on the command line",
        ),
        (
            [*pool_flags, "--secret-file", good, *bloom],
            "cannot keep corrections",
        ),
        ([*pool_flags, "--secret-file", good, "--labeling-queue-capacity", "0"], ">= 1, got 0"),
        (
            [*pool_flags, "--secret-file", good, "--update-tolerance", "0.01"],
            "--update-tolerance: --model digits:pool cannot learn",
        ),
        ([*pool_flags, "--secret-file", good, "--update-tolerance", "2"], "must be in [0, 1]"),
        (["--model", "digits:pool(members=x)"], "members must be a positive integer"),
        (["--model", "digits:pool(members"], "write DATASET:MODEL or DATASET:MODEL(param"),
    ]:
        lines = _refused(tmp_path, gateway_env, flags)
        assert len(lines) == 1 and message in lines[0], (flags, lines)
    # a secret other users may read is served with a warning (here refused for the model)
    warned = _refused(tmp_path, gateway_env, ["--secret-file", str(readable), "--model", "x"])
    assert (
        warned[0] == f"warning: --secret-file {readable} can be read by other users of "
        f"this host: chmod 600 {readable}"
    )
    assert len(warned) == 2 and warned[1].startswith("error:")


def _refused(tmp_path: Path, gateway_env: dict[str, str], flags: list[str]) -> list[str]:
    """``serve FLAGS``' lines on stderr, which must end in one error line, exit 2 and no
    traceback."""
    cmd = [sys.executable, "-m", "movingtarget", "serve", "--keys-db"]
    cmd += [f"sqlite:///{tmp_path / 'k.db'}", *flags]
    env = {**os.environ, **gateway_env}
    env.pop("MOVINGTARGET_SECRET")  # only what the flags give
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, (flags, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in out.stderr, (flags, out.stderr)
    return lines


def test_a_poisoning_labeler_is_rolled_back_and_audited(
    tmp_path: Path, gateway_env: dict[str, str]
) -> None:
    """A pool of online members behind the dynamic defense learns from labeler keys'
    labels, each model update gated on a canary (``--update-tolerance``). A labeler key
    that labels 300 queries with wrong classes (ten partial_fit passes) would take canary
    accuracy from about 0.94 to about 0.77: the update is rolled back, the response and
    the audit log say so, and the members' answers on other inputs are what they were.
    The same queries with their true classes are kept."""
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    audit = tmp_path / "audit.jsonl"
    labeler = new_key(keys, "labeler", rate=0)
    args = list(_dynamic_args(keys, f"sqlite:///{tmp_path / 'm.db'}", _secret_file(tmp_path)))
    args[1] = "digits:pool(member=mlp, members=2)"
    args += ["--update-tolerance", "0.01", "--update-steps", "10", "--audit", str(audit)]
    data = load_dataset("digits").split(test_size=0.3, seed=0)
    x, y = data.x_test[:300], data.y_test[:300]
    probe = data.x_test[300:400]
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        qids = []
        for part in (x[:150], x[150:]):  # under the 256 inputs of one request
            r = classify(server.url, labeler, part)
            assert r.status_code == 200, r.text
            qids += [a["query_id"] for a in r.json()["answers"]]

        def label(classes: np.ndarray) -> dict:
            body = {
                "labels": [
                    {"query_id": q, "label": int(c)} for q, c in zip(qids, classes, strict=True)
                ]
            }
            resp = httpx.post(f"{server.url}/v1/feedback", json=body, headers=auth(labeler))
            assert resp.status_code == 200, resp.text
            return resp.json()

        def served(name: str) -> list[tuple[int, str]]:
            # a fresh key (held to its own history) and two members: where they agree
            # the schedule does not matter, where they disagree it abstains; so the
            # answers are the members' own
            r = classify(server.url, new_key(keys, name, rate=0), probe)
            assert r.status_code == 200, r.text
            return [(a["label"], a["reason"]) for a in r.json()["answers"]]

        before = served("before")
        poisoned = label((y + 1) % 10)
        assert poisoned["model_update"] == "rolled back" and poisoned["learned"] == 300
        assert served("after-poisoning") == before
        honest = label(y)
        assert honest["model_update"] == "kept"
    rows = [json.loads(line) for line in audit.read_text().splitlines()]
    repairs = [r for r in rows if r.get("event") == "repair"]
    assert [r["model_update"] for r in repairs] == ["rolled back", "kept"]
    assert repairs[0]["canary_before"] - repairs[0]["canary_after"] > 0.01
    assert repairs[0]["key"] == "labeler" and len(repairs[0]["query_ids"]) == 300


def test_a_served_refresh_trains_on_the_split_and_keeps_serving(
    tmp_path: Path, gateway_env: dict[str, str]
) -> None:
    """``refresh(...)`` behind a gateway gets the served split's training data and a
    canary (a dataset model), its schedule in the gateway's milliseconds: each request a
    period after the last refreshes one member and is answered."""
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    token = new_key(keys, "user", rate=0)
    defense = "refresh(every=1) > moving-target(abstain_on=disagreement)"
    args = [
        "--model", "digits:pool", "--defense", defense, "--keys-db", keys,
        "--secret-file", _secret_file(tmp_path),
    ]  # fmt: skip
    x = load_dataset("digits").split(test_size=0.3, seed=0).x_test
    with GatewayServer(*args, env=gateway_env, log=tmp_path / "serve.log") as server:
        for i in range(3):
            r = classify(server.url, token, x[i * 5 : i * 5 + 5])
            assert r.status_code == 200, r.text
            assert all(a["reason"] in ("model", "disagreement") for a in r.json()["answers"])
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
