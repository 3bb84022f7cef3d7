"""Defense mechanisms: each one's job, composition order, reasons, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget import ABSTAIN, ConfigError, InputError, Reason
from movingtarget.defenses import (
    COMPOSITIONS,
    Argmax,
    ConfidenceThreshold,
    Defense,
    Memorize,
    RateLimit,
    Sample,
    build_defense,
    parse_mechanism,
)
from movingtarget.defenses.near_repeat import calibrate_defense
from movingtarget.models import ModelPool


class FixedProba:
    """p(class) depends only on the first feature: row i gets probs[int(x[i, 0])]."""

    def __init__(self, probs: list[list[float]]) -> None:
        self.probs = np.asarray(probs, dtype=np.float64)
        self.n_classes = self.probs.shape[1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.probs[x.reshape(len(x), -1)[:, 0].astype(int)]


MODEL = FixedProba([[0.7, 0.2, 0.1], [0.1, 0.45, 0.45], [0.05, 0.05, 0.9]])


def queries(kinds: list[int], salt: float = 0.0) -> np.ndarray:
    x = np.zeros((len(kinds), 4), np.float32)
    x[:, 0] = kinds
    x[:, 1] = salt
    return x


def test_argmax_answers_every_query_with_reason_model() -> None:
    a = Defense(MODEL, [Argmax()]).answer(queries([0, 1, 2]))
    assert a.labels.tolist() == [0, 1, 2]
    assert a.reason_labels() == ["model"] * 3


def test_sample_matches_model_probabilities() -> None:
    n = 20_000
    a = Defense(MODEL, [Sample()], seed=3).answer(queries([2] * n))
    share = np.bincount(a.labels, minlength=3) / n
    se = np.sqrt(MODEL.probs[2] * (1 - MODEL.probs[2]) / n)
    assert np.all(np.abs(share - MODEL.probs[2]) <= 4 * se)


def test_sample_temperature_sharpens() -> None:
    a = Defense(MODEL, [Sample(temperature=0.05)], seed=0).answer(queries([0] * 2000))
    assert (a.labels == 0).all()


def test_threshold_abstains_only_on_unsure_model_answers() -> None:
    a = Defense(MODEL, [Argmax(), ConfidenceThreshold(0.6)]).answer(queries([0, 1, 2]))
    assert a.labels.tolist() == [0, ABSTAIN, 2]
    assert a.reason_labels() == ["model", "low-confidence", "model"]


def test_memorize_abstains_on_repeats_within_and_across_batches() -> None:
    d = Defense(MODEL, [Memorize("abstain"), Argmax()])
    first = d.answer(queries([0, 2, 0]))
    assert first.labels.tolist() == [0, 2, ABSTAIN]
    assert first.reasons[2] == Reason.REPEAT
    second = d.answer(queries([2, 1]))
    assert second.labels.tolist() == [ABSTAIN, 1]


def test_memorize_catches_repeats_from_any_client() -> None:
    d = Defense(MODEL, [Memorize("abstain"), Argmax()])
    d.answer(queries([1]), clients=[7])
    assert d.answer(queries([1]), clients=[8]).labels.tolist() == [ABSTAIN]


def test_memorize_random_is_uniform_on_repeats() -> None:
    d = Defense(MODEL, [Memorize("random"), Argmax()], seed=1)
    n = 30_000
    a = d.answer(queries([2] * n))
    assert a.reasons[0] == Reason.MODEL
    repeats = a.labels[1:]
    assert (a.reasons[1:] == Reason.REPEAT_RANDOM).all()
    share = np.bincount(repeats, minlength=3) / len(repeats)
    se = np.sqrt((1 / 3) * (2 / 3) / len(repeats))
    assert np.all(np.abs(share - 1 / 3) <= 4 * se)


def test_memorize_noise_evades_exact_matching() -> None:
    d = Defense(MODEL, [Memorize("abstain"), Argmax()])
    d.answer(queries([2]))
    assert d.answer(queries([2], salt=1e-6)).labels.tolist() == [2]


def test_reset_forgets_memory() -> None:
    d = Defense(MODEL, [Memorize("abstain"), Argmax()])
    d.answer(queries([1]))
    d.reset()
    assert d.answer(queries([1])).labels.tolist() == [1]


def test_rate_limit_per_client_and_window() -> None:
    d = Defense(MODEL, [RateLimit(2, window=10), Argmax()])
    a = d.answer(queries([0] * 5, salt=0), clients=[1, 1, 2, 1, 2], times=np.arange(5))
    assert a.reason_labels() == ["model", "model", "model", "rate-limited", "model"]
    # a new window resets the count
    b = d.answer(queries([0]), clients=[1], times=np.array([10]))
    assert b.labels.tolist() == [0]
    # the limit holds across batches inside one window
    c = d.answer(queries([0, 0]), clients=[1, 1], times=np.array([11, 12]))
    assert c.reason_labels() == ["model", "rate-limited"]


def test_rate_limit_decides_before_memorize() -> None:
    d = Defense(MODEL, [RateLimit(1, window=100), Memorize("abstain"), Argmax()])
    a = d.answer(queries([0, 0]), clients=[1, 1])
    assert a.reason_labels() == ["model", "rate-limited"]


#: MODEL as a pool of three identical members, for compositions that need a pool
POOL = ModelPool([MODEL] * 3)


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_every_named_composition_builds_and_answers(name: str) -> None:
    d = build_defense(name, POOL if "moving-target" in COMPOSITIONS[name] else MODEL, seed=0)
    assert d.name == name
    # what experiments and the gateway do first (a no-op for uncalibrated mechanisms)
    calibrate_defense(d, queries([0, 1, 2] * 5, salt=np.random.default_rng(0).random()))
    a = d.answer(queries([0, 1, 2, 0]))
    assert len(a) == 4
    assert set(a.labels.tolist()) <= {ABSTAIN, 0, 1, 2}
    assert not (a.reasons == Reason.UNDECIDED).any()


def test_composition_text_and_tables() -> None:
    d = build_defense("memorize(on_repeat=random) > sample(temperature=0.5)", MODEL)
    assert d.describe() == "memorize(on_repeat=random) > sample(temperature=0.5)"
    t = build_defense([{"type": "argmax"}, {"type": "threshold", "min_confidence": 0.8}], MODEL)
    assert t.describe() == "argmax > threshold(min_confidence=0.8)"
    assert parse_mechanism("rate-limit(max_queries=5, window=10)") == (
        "rate-limit",
        {"max_queries": 5, "window": 10},
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("memorise > argmax", "unknown mechanism 'memorise' (did you mean 'memorize'?)"),
        ("memorize(on_repeat=forget) > argmax", "on_repeat must be one of"),
        ("memorize > threshold", "exactly one decision"),
        ("argmax > memorize", "must be ordered"),
        ("argmax > sample", "exactly one decision"),
        ("sample(temperature=0)", "temperature must be > 0"),
        ("threshold(min_confidence=2) > argmax", "min_confidence must be in [0, 1]"),
        ("argmax(x=1)", "mechanism 'argmax': Argmax() takes no arguments"),
        ("memorize(abstain) > argmax", "needs the form param=value"),
        ("rate-limit(max_queries=0) > argmax", "must be >= 1"),
    ],
)
def test_bad_compositions_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        build_defense(spec, MODEL)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([[np.nan, 0, 0, 0]]), "NaN or infinite"),
        (np.array([[np.inf, 0, 0, 0]]), "NaN or infinite"),
        (np.zeros(4), "must be a batch"),
        (np.array([["a", "b"]]), "must be numeric"),
        ([[1, 2], [3]], "not a numeric array"),
    ],
)
def test_bad_queries_raise_input_error(x: object, message: str) -> None:
    d = build_defense("memorize-abstain", MODEL)
    with pytest.raises(InputError) as err:
        d.answer(x)
    assert message in str(err.value)


def test_bad_query_does_not_touch_memory() -> None:
    d = build_defense("memorize-abstain", MODEL)
    d.answer(queries([1]))
    with pytest.raises(InputError):
        d.answer(np.array([[np.nan, 0, 0, 0]]))
    mem = d.mechanisms[0]
    assert isinstance(mem, Memorize)
    assert len(mem.store) == 1  # type: ignore[arg-type]
    assert d.answer(queries([1])).labels.tolist() == [ABSTAIN]


def test_client_ids_must_match_batch() -> None:
    with pytest.raises(InputError, match="client ids"):
        build_defense("deterministic", MODEL).answer(queries([0, 1]), clients=[1])
