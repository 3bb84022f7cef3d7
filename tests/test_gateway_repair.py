"""Repair through a live gateway: only a labeler key's labels change an answer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np

from gateway_server import GatewayServer, auth, classify, gateway_env, new_key
from movingtarget.datasets import load_dataset

__all__ = ["gateway_env"]


def _label(url: str, token: str, qid: str, label: int) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/feedback",
        json={"labels": [{"query_id": qid, "label": label}]},
        headers=auth(token),
    )


def test_only_a_labeler_keys_labels_correct_the_answers(tmp_path: Path, gateway_env) -> None:
    """A gateway serving ``memorize-correct`` with one labeler key. A digit the model
    gets wrong is sent by a user; the user's own true label is stored and changes no
    answer (another key still gets the wrong class); the labeler's label is learned, and
    from then on every key gets the true class, reason ``corrected``. The audit log
    records the repair; a labeler's label for an unknown query id is refused."""
    keys = f"sqlite:///{tmp_path / 'keys.db'}"
    tokens = {n: new_key(keys, n, rate=0) for n in ("user", "other", "third", "labeler")}
    audit = tmp_path / "audit.jsonl"
    # each key held to its own history (quorum 0): the probe's and the user's sends of the
    # digit do not make it a cross-key repeat for the others
    args = ("--keys-db", keys, "--defense", "memorize-correct", "--cross-key-quorum", "0")
    args += ("--labeler-key", "labeler")
    with GatewayServer(*args, "--audit", str(audit), env=gateway_env) as server:
        url = server.url
        data = load_dataset("digits")
        # a digit the served model gets wrong (found by asking a throwaway key each)
        probe = new_key(keys, "probe", rate=0)
        answers = []
        for lo in range(0, len(data.y), 200):
            answers += classify(url, probe, data.x[lo : lo + 200]).json()["answers"]
        wrong = next(i for i, a in enumerate(answers) if a["label"] != int(data.y[i]))
        x, truth = data.x[[wrong]], int(data.y[wrong])
        first = classify(url, tokens["user"], x).json()["answers"][0]
        assert first["label"] != truth
        r = _label(url, tokens["user"], first["query_id"], truth)
        assert r.status_code == 200 and r.json() == {"stored": 1, "learned": 0}
        after_user = classify(url, tokens["other"], x).json()["answers"][0]
        assert after_user["label"] == first["label"] and after_user["reason"] == "model"
        r = _label(url, tokens["labeler"], first["query_id"], truth)
        assert r.status_code == 200 and r.json() == {"stored": 1, "learned": 1}
        fixed = classify(url, tokens["third"], x).json()["answers"][0]
        assert fixed["label"] == truth and fixed["reason"] == "corrected"
        r = _label(url, tokens["labeler"], "req.0.0123456789abcdef", truth)
        assert r.status_code == 400 and "req.0.0123456789abcdef" in r.json()["error"]
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    repairs = [line for line in lines if line.get("event") == "repair"]
    assert len(repairs) == 1
    assert repairs[0]["key"] == "labeler" and repairs[0]["labels"] == [truth]
    assert repairs[0]["query_ids"] == [first["query_id"]] and repairs[0]["learned"] == 1
    assert np.isfinite(truth)
