"""The centroid-closeness detector: its score, calibration, false alarms and power.

Numbers are measured on the digits split (seed 0: 1,258 training, 539 test inputs).
The torch MLP is trained on one half of the training split and the detector is
calibrated on the other half, so calibration inputs are benign inputs the model has
not seen, as the held-out ones are.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from movingtarget import ABSTAIN, ConfigError, Reason
from movingtarget.datasets import load_digits
from movingtarget.defenses import (
    COMPOSITIONS,
    CentroidDetector,
    build_defense,
    normalized_composition,
)
from movingtarget.defenses.centroid import PenultimateFeatures, StandardizedFeatures
from movingtarget.defenses.near_repeat import calibrate_defense

torch = pytest.importorskip("torch")
pytest.importorskip("art")

FALSE_ALARM = 0.05
EPS = 0.1


def _auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982): with Q1 = A / (2 - A), Q2 = 2 A^2 / (1 + A),
    SE^2 = [A (1 - A) + (n_pos - 1)(Q1 - A^2) + (n_neg - 1)(Q2 - A^2)] / (n_pos n_neg)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)
    return math.sqrt(var / (n_pos * n_neg))


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Mann-Whitney: P(score of an adversarial > score of a benign), ties counting half."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([neg, pos]))
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _far_se(p: float, n_cal: int, n_held: int) -> float:
    """Standard error of the held-out alarm rate of a threshold calibrated for ``p``.

    The threshold is an order statistic of ``n_cal`` benign scores: its true exceedance
    probability q is Beta(k + 1, n_cal - k) distributed (k = floor(p n_cal) scores lie
    above it), mean ~ p and Var(q) ~ p (1 - p) / n_cal. Given q, the held-out alarm
    count is Binomial(n_held, q). By the law of total variance the held-out rate has
    Var = E[q (1 - q)] / n_held + Var(q) ~ p (1 - p) (1 / n_held + 1 / n_cal).
    """
    return math.sqrt(p * (1 - p) * (1 / n_held + 1 / n_cal))


def _fgsm(module: torch.nn.Module, x: np.ndarray, eps: float) -> np.ndarray:
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(64,),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    adv = FastGradientMethod(clf, eps=eps).generate(x.astype(np.float32))
    return np.asarray(adv, dtype=np.float32)


@pytest.fixture(scope="module")
def digits():
    split = load_digits().split(seed=0)
    order = np.random.default_rng(0).permutation(len(split.x_train))
    fit, cal = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    return split, fit, cal


@pytest.fixture(scope="module")
def mlp(digits):
    """The brief's MLP, trained on the fit half (Adam, 30 epochs, seeded)."""
    from movingtarget.models import TorchModel

    split, fit, _ = digits
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.from_numpy(split.x_train[fit])
    y = torch.from_numpy(split.y_train[fit].astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    net.eval()
    return TorchModel(net, 10, input_shape=(64,), device="cpu")


@pytest.fixture(scope="module")
def attacked(digits, mlp):
    """FGSM (eps 0.1) of the test split; only those that changed the predicted class."""
    split, _, _ = digits
    adv = _fgsm(mlp.module, split.x_test, EPS)
    changed = mlp.predict_proba(adv).argmax(1) != mlp.predict_proba(split.x_test).argmax(1)
    return adv[changed]


# -- the score ------------------------------------------------------------------------
class _Nearest:
    """A 3-class model: the class whose prototype is nearest (classes 0, 1, 2 on a line)."""

    n_classes = 3
    protos = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])

    def predict_proba(self, x):
        d = ((np.asarray(x, float)[:, None, :] - self.protos[None]) ** 2).sum(-1)
        p = np.zeros((len(x), 3))
        p[np.arange(len(x)), d.argmin(1)] = 1.0
        return p


def _fitted_nearest(false_alarm: float = 0.1) -> tuple[CentroidDetector, np.ndarray]:
    rng = np.random.default_rng(1)
    x = np.concatenate([p + rng.normal(0, 1, (300, 2)) for p in _Nearest.protos])
    x = x.astype(np.float32)
    det = CentroidDetector(false_alarm)
    det.calibrate(x, model=_Nearest())
    return det, x


def test_score_is_distance_ratio_to_the_nearest_other_centroid():
    det, x = _fitted_nearest()
    # the brute-force formula, one input at a time, in the standardized space
    assert det._features is not None and det.centroids is not None
    queries = np.random.default_rng(2).uniform(-5, 25, (50, 2))
    cls = _Nearest().predict_proba(queries).argmax(1)
    f = det._features(queries)
    want = []
    for fi, c in zip(f, cls, strict=True):
        d = np.linalg.norm(det.centroids - fi, axis=1)
        d_o = min(d[j] for j in range(3) if j != c)
        want.append(d[c] / (d[c] + d_o))
    np.testing.assert_allclose(det.score(queries), want, rtol=1e-9, atol=1e-12)
    # centroids from the model's classes: the means of each class's (standardized) inputs
    np.testing.assert_allclose(
        det.centroids, [f_.mean(0) for f_ in np.split(det._features(x), 3)], atol=0.2
    )


def test_score_depends_on_the_non_selected_class():
    """Two inputs answered class 1 at the same distance from its centroid: the one near
    class 0's centroid scores higher than the one pointing away from every centroid."""
    det, _ = _fitted_nearest()
    feats = det._features
    assert isinstance(feats, StandardizedFeatures) and det.centroids is not None
    assert feats.mean is not None and feats.scale is not None
    c0, c1 = det.centroids[0], det.centroids[1]
    r = 0.3 * np.linalg.norm(c0 - c1)
    u = (c0 - c1) / np.linalg.norm(c0 - c1)
    perp = np.array([-u[1], u[0]])
    f = np.stack([c1 + r * u, c1 + r * perp])  # in the standardized feature space
    x = f * feats.scale + feats.mean
    np.testing.assert_allclose(feats(x), f, atol=1e-9)
    toward, away = det.score(x, classes=np.array([1, 1]))
    # toward: d_o = |c0 - c1| - r, so 0.3 / (0.3 + 0.7); away: d_o = sqrt(1 + 0.09) |c0 - c1|
    assert toward == pytest.approx(0.3)
    assert away == pytest.approx(0.3 / (0.3 + math.sqrt(1.09)), rel=1e-3)
    # a given class overrides the argmax: the same input scores high under a wrong class
    hi, lo = det.score(np.array([[1.0, 0.0], [1.0, 0.0]]), classes=np.array([1, 0]))
    assert hi > 0.5 > lo


def test_threshold_is_the_upper_quantile_of_calibration_scores():
    for fa in (0.01, 0.05, 0.2):
        det, x = _fitted_nearest(fa)
        scores = det.score(x)
        above = int((scores > det.threshold).sum())
        # exactly floor(fa n) calibration scores above it (continuous scores: no ties)
        assert above == math.floor(fa * len(x)), (fa, above)
        assert det.calibration is not None
        assert det.calibration.calibration_rate == above / len(x)


def test_labels_may_give_the_centroids():
    det, x = _fitted_nearest()
    true = np.repeat(np.arange(3), 300)
    labelled = CentroidDetector(0.1)
    labelled.calibrate(x.astype(np.float32), model=_Nearest(), labels=true)
    assert labelled.centroids is not None and det.centroids is not None
    mean_true = [labelled._features(x[true == c]).mean(0) for c in range(3)]
    np.testing.assert_allclose(labelled.centroids, mean_true, atol=1e-12)
    with pytest.raises(ConfigError, match="labels"):
        labelled.calibrate(x, model=_Nearest(), labels=true[:10])


# -- parameters and misuse ------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan"), "x", True])
def test_bad_false_alarm_is_refused(bad):
    with pytest.raises(ConfigError, match="false_alarm"):
        CentroidDetector(bad)


def test_bad_false_alarm_in_a_composition():
    class M:
        n_classes = 2

        def predict_proba(self, x):
            return np.tile([0.5, 0.5], (len(x), 1))

    with pytest.raises(ConfigError, match="false_alarm"):
        build_defense("argmax > centroid(false_alarm=2)", M())


def test_answers_before_calibration_are_a_clear_error(mlp, digits):
    defense = build_defense("centroid-abstain", mlp)
    with pytest.raises(ConfigError, match="not calibrated"):
        defense.answer(digits[0].x_test[:3])
    with pytest.raises(ConfigError, match="calibrate"):
        CentroidDetector().score(digits[0].x_test[:3])


def test_composition_is_registered():
    assert COMPOSITIONS["centroid-abstain"] == "argmax > centroid(false_alarm=0.001)"
    assert normalized_composition("centroid-abstain") == [
        ("argmax", {}),
        ("centroid", {"false_alarm": 0.001}),
    ]
    assert Reason.ADVERSARIAL_LIKELIHOOD == 10
    assert Reason.ADVERSARIAL_LIKELIHOOD.label == "adversarial-likelihood"


# -- the feature space ----------------------------------------------------------------
def test_penultimate_features_are_the_last_linear_input(mlp, digits):
    x = digits[0].x_test[:20]
    with torch.no_grad():
        want = mlp.module[:-1](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(PenultimateFeatures(mlp)(x), want, rtol=1e-6)


def test_penultimate_features_of_a_nested_module():
    from movingtarget.models import TorchModel

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh())
            self.head = torch.nn.Sequential(torch.nn.Linear(5, 3))

        def forward(self, x):
            return self.head(self.body(x))

    net = Net()
    x = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    with torch.no_grad():
        want = net.body(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(PenultimateFeatures(TorchModel(net, 3, device="cpu"))(x), want)


def test_a_torch_module_without_a_linear_layer_is_refused():
    from movingtarget.models import TorchModel

    net = torch.nn.Sequential(torch.nn.Flatten())
    model = TorchModel(net, 4, input_shape=(4,), device="cpu")
    with pytest.raises(ConfigError, match="penultimate"):
        CentroidDetector(0.05).calibrate(np.zeros((5, 4), np.float32), model=model)


# -- measured on digits ---------------------------------------------------------------
def test_benign_false_alarms_on_held_out_data(digits, mlp):
    split, fit, cal = digits
    det = CentroidDetector(FALSE_ALARM)
    c = det.calibrate(split.x_train[cal], split.x_test, model=mlp)
    se = _far_se(FALSE_ALARM, c.n_calibration, c.n_heldout)
    print(
        f"\ncentroid mlp: held-out false alarms {c.heldout_rate:.4f} of {c.n_heldout} "
        f"(target {FALSE_ALARM}, calibrated on {c.n_calibration}; s.e. {se:.4f})"
    )
    assert c.n_calibration == len(cal) and c.n_heldout == len(split.x_test)
    assert abs(c.heldout_rate - FALSE_ALARM) <= 3 * se
    # for the record: calibrated on the model's own training inputs instead, benign
    # scores there are lower than on unseen inputs, and held-out alarms run high
    own = CentroidDetector(FALSE_ALARM).calibrate(split.x_train[fit], split.x_test, model=mlp)
    print(f"centroid mlp: calibrated on its {own.n_calibration} training inputs, held-out "
          f"false alarms {own.heldout_rate:.4f} of {own.n_heldout}")  # fmt: skip


def test_reference_fits_the_centroids_and_the_threshold_holds_on_held_out_data(digits, mlp):
    """With ``reference=`` the model's own training inputs, the centroids are their
    class means (argmax classes) and only the threshold comes from the unseen
    calibration half; the held-out alarm rate then holds within 3 s.e., as the
    runner and the gateway calibrate."""
    split, fit, cal = digits
    det = CentroidDetector(FALSE_ALARM)
    c = det.calibrate(split.x_train[cal], split.x_test, model=mlp, reference=split.x_train[fit])
    feats = PenultimateFeatures(mlp)(split.x_train[fit])
    cls = mlp.predict_proba(split.x_train[fit]).argmax(1)
    assert det.centroids is not None
    np.testing.assert_allclose(det.centroids[3], feats[cls == 3].mean(axis=0), rtol=1e-9)
    assert c.n_calibration == len(cal) and c.calibration_rate <= FALSE_ALARM
    se = _far_se(FALSE_ALARM, c.n_calibration, c.n_heldout)
    print(f"\ncentroid mlp, training-input centroids: held-out false alarms "
          f"{c.heldout_rate:.4f} (target {FALSE_ALARM}, s.e. {se:.4f})")  # fmt: skip
    assert abs(c.heldout_rate - FALSE_ALARM) <= 3 * se
    with pytest.raises(ConfigError, match="reference needs at least 2"):
        det.calibrate(split.x_train[cal], model=mlp, reference=split.x_train[:1])


def test_auc_against_fgsm_mlp(digits, mlp, attacked):
    split, _, cal = digits
    det = CentroidDetector(FALSE_ALARM)
    det.calibrate(split.x_train[cal], model=mlp)
    benign, adv = det.score(split.x_test), det.score(attacked)
    auc = _auc(benign, adv)
    se = _auc_se(auc, len(adv), len(benign))
    print(f"\ncentroid mlp (penultimate): AUC {auc:.3f} +- {se:.3f} ({len(adv)} FGSM, "
          f"{len(benign)} benign)")  # fmt: skip
    assert len(adv) >= 100
    assert auc > 0.5 + 3 * se
    # ignoring the non-selected classes (d_c alone) does worse: the ratio uses them
    assert det._features is not None and det.centroids is not None

    def d_c(x):
        f = det._features(x)
        c = mlp.predict_proba(x).argmax(1)
        return np.linalg.norm(f - det.centroids[c], axis=1)

    print(f"centroid mlp: AUC of d_c alone {_auc(d_c(split.x_test), d_c(attacked)):.3f}")


def test_auc_against_fgsm_logistic_standardized_inputs(digits, tmp_path):
    """The logistic model (standardized-input features): FGSM white-box through the
    same softmax(W x + b) as a torch Linear layer (the scaler folded in)."""
    from movingtarget.models import build_model

    split, _, _ = digits
    model = build_model("logistic", split, cache_dir=tmp_path)
    scaler, lr = model.estimator[0], model.estimator[-1]
    w = lr.coef_ / scaler.scale_
    b = lr.intercept_ - w @ scaler.mean_
    lin = torch.nn.Linear(64, 10).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    net = torch.nn.Sequential(lin).float()
    x = split.x_test
    with torch.no_grad():
        same = net(torch.from_numpy(x)).argmax(1).numpy()
    assert (same == model.predict_proba(x).argmax(1)).mean() > 0.99
    adv = _fgsm(net, x, EPS)
    adv = adv[model.predict_proba(adv).argmax(1) != model.predict_proba(x).argmax(1)]
    det = CentroidDetector(FALSE_ALARM)
    c = det.calibrate(split.x_train, x, model=model)  # as the runner: the training split
    benign, attacked = det.score(x), det.score(adv)
    auc = _auc(benign, attacked)
    se = _auc_se(auc, len(attacked), len(benign))
    print(
        f"\ncentroid logistic (standardized inputs): AUC {auc:.3f} +- {se:.3f} "
        f"({len(attacked)} FGSM, {len(benign)} benign); held-out false alarms "
        f"{c.heldout_rate:.4f} of {c.n_heldout} (calibrated on the training split)"
    )
    assert len(attacked) >= 100
    assert auc > 0.5 + 3 * se


def test_defense_abstains_on_fgsm_not_on_benign(digits, mlp, attacked):
    split, _, cal = digits
    defense = build_defense(f"argmax > centroid(false_alarm={FALSE_ALARM})", mlp)
    (c,) = calibrate_defense(defense, split.x_train[cal], split.x_test)
    n_adv, n_ben = len(attacked), len(split.x_test)
    adv = defense.answer(attacked, np.ones(n_adv, np.int64), np.arange(n_adv))
    ben = defense.answer(split.x_test, np.zeros(n_ben, np.int64), np.arange(n_ben) + n_adv)
    flagged_adv = adv.reasons == Reason.ADVERSARIAL_LIKELIHOOD
    flagged_ben = ben.reasons == Reason.ADVERSARIAL_LIKELIHOOD
    assert (adv.labels[flagged_adv] == ABSTAIN).all()
    assert set(np.unique(adv.reasons)) <= {Reason.MODEL, Reason.ADVERSARIAL_LIKELIHOOD}
    # model answers are kept as the model gave them
    kept = ~flagged_adv
    assert (adv.labels[kept] == mlp.predict_proba(attacked[kept]).argmax(1)).all()
    share_adv, share_ben = float(flagged_adv.mean()), float(flagged_ben.mean())
    se_ben = _far_se(FALSE_ALARM, c.n_calibration, n_ben)
    se_adv = math.sqrt(share_adv * (1 - share_adv) / n_adv)
    print(f"\ncentroid defense: abstains on {share_adv:.3f} of {n_adv} successful FGSM, "
          f"{share_ben:.4f} of {n_ben} benign")  # fmt: skip
    assert share_ben == c.heldout_rate
    assert abs(share_ben - FALSE_ALARM) <= 3 * se_ben
    # a clear share: several times the false-alarm rate, beyond both errors
    assert share_adv - 3 * math.hypot(se_adv, se_ben) > 3 * FALSE_ALARM


def test_only_model_answers_are_filtered(digits, mlp, attacked):
    split, _, cal = digits
    defense = build_defense(
        f"memorize(on_repeat=abstain) > argmax > centroid(false_alarm={FALSE_ALARM})", mlp
    )
    calibrate_defense(defense, split.x_train[cal])
    first = defense.answer(attacked)
    flagged = np.flatnonzero(first.reasons == Reason.ADVERSARIAL_LIKELIHOOD)
    assert len(flagged)
    again = defense.answer(attacked[flagged[:5]])
    assert (again.reasons == Reason.REPEAT).all()  # the gate's decision stays
    defense.reset()  # calibration survives a new deployment
    assert (defense.answer(attacked[flagged[:5]]).reasons == Reason.ADVERSARIAL_LIKELIHOOD).all()


def test_gateway_calibrates_the_detector_or_refuses_to_start(digits, mlp):
    from movingtarget.gateway.server.config import GatewayConfig
    from movingtarget.gateway.server.service import build_served_defense
    from movingtarget.gateway.server.serving import ServedModel

    split, _, cal = digits
    config = GatewayConfig(model="digits:mlp", defense="centroid-abstain")
    served = ServedModel(mlp, "digits-mlp", "v", (64,), 10, "digits:mlp", split.x_train[cal])
    defense = build_served_defense(config, served)
    (detector,) = [m for m in defense.mechanisms if isinstance(m, CentroidDetector)]
    assert detector.calibration is not None and detector.calibration.n_calibration == len(cal)
    assert len(defense.answer(split.x_test[:4])) == 4
    saved = ServedModel(mlp, "digits-mlp", "v", (64,), 10, "model.pkl", None)
    with pytest.raises(ConfigError, match="centroid"):
        build_served_defense(config, saved)


def _rows_in(rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Which of ``rows`` are byte-identical to some row of ``pool``."""
    seen = {r.tobytes() for r in np.ascontiguousarray(pool)}
    return np.array([r.tobytes() in seen for r in np.ascontiguousarray(rows)])


def test_experiments_calibrate_the_detector_on_unseen_benign_inputs():
    """The runner calibrates a mechanism with ``calibrate_on = "unseen"`` on one half of
    the benign pool (inputs the model never trained on) and reports its alarm rate on
    the other half; other mechanisms keep the training inputs."""
    from movingtarget.datasets import load_dataset
    from movingtarget.experiment import load_config
    from movingtarget.experiment.runner import calibrate_task, prepare

    cfg = load_config("hello-world", ["seeds=1"])
    prepared = prepare(cfg, cfg.split_seed)
    assert prepared.unseen is not None
    cal, held = prepared.unseen
    pool = prepared.pools.benign_x
    assert len(cal) + len(held) == len(pool) and len(cal) == len(pool) // 2
    assert _rows_in(cal, pool).all() and _rows_in(held, pool).all()
    assert not _rows_in(cal, held).any()
    split = load_dataset("digits").split(test_size=cfg.test_size, seed=cfg.split_seed)
    assert not _rows_in(cal, split.x_train).any()  # the model never trained on them
    defense = build_defense(
        f"near-repeat > argmax > centroid(false_alarm={FALSE_ALARM})", prepared.model
    )
    by_kind = {c.kind: c for c in calibrate_task(defense, prepared, seed=0)}
    c = by_kind["centroid"]
    assert (c.n_calibration, c.n_heldout) == (len(cal), len(held))
    assert by_kind["centroid"] is not None and len(by_kind) == 2
    near = next(v for k, v in by_kind.items() if k != "centroid")
    assert near.n_calibration == len(prepared.calibration_x)  # training inputs, as before
    se = _far_se(FALSE_ALARM, c.n_calibration, c.n_heldout)
    assert abs(c.heldout_rate - FALSE_ALARM) <= 3 * se


def test_gateway_calibrates_the_detector_on_the_served_test_split():
    from movingtarget.datasets import load_dataset
    from movingtarget.gateway.server.config import GatewayConfig
    from movingtarget.gateway.server.service import build_served_defense
    from movingtarget.gateway.server.serving import load_served_model

    served = load_served_model("digits:logistic")
    assert served.unseen is not None
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    cal, held = served.unseen
    assert _rows_in(cal, split.x_test).all() and _rows_in(held, split.x_test).all()
    assert not _rows_in(cal, split.x_train).any()
    config = GatewayConfig(
        model="digits:logistic", defense=f"argmax > centroid(false_alarm={FALSE_ALARM})"
    )
    defense = build_served_defense(config, served)
    (detector,) = [m for m in defense.mechanisms if isinstance(m, CentroidDetector)]
    c = detector.calibration
    assert c is not None and (c.n_calibration, c.n_heldout) == (len(cal), len(held))
