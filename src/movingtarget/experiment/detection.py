"""The centroid detector against each per-input attack, and against benign look-alikes.

Papernot and McDaniel (2016) propose scoring each input's likelihood of being
adversarial by its closeness to the centroid of a non-selected class
(:class:`~movingtarget.defenses.centroid.CentroidDetector`). This measures that score
where ``movingtarget resilience`` runs: its centroids fitted on (up to 2,000) training
inputs and its threshold on benign test inputs outside the measured sample (the model
never trained on them), it scores the clean measured inputs,
the *successful* adversarial examples of FGSM, PGD (at the resilience ``eps_linf``),
DeepFool and JSMA (untargeted, a random other class) crafted from the correctly
classified ones, and benign near-duplicates (each clean input plus uniform noise of
``near_duplicate_noise``, clipped to the data's range). For each group: the ROC AUC
against the clean inputs with its Hanley-McNeil standard error, and the share above the
threshold calibrated for ``detection_false_alarm`` (the detection rate; for the
near-duplicates, their false-alarm rate).

A detector that flags what is merely *unusual* would flag near-duplicates too; their AUC
near 0.5 says the score reacts to the adversarial direction, not to noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.experiment.config import ResilienceConfig
from movingtarget.metrics.detection import separation

#: The attacks the detector is scored against, in report order, with their budgets.
ATTACKS = ("fgsm", "pgd", "deepfool", "jsma")


def centroid_detection(
    model: Any,
    est: Any,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    correct: NDArray[np.bool_],
    unseen: tuple[NDArray[np.float32], NDArray[np.float32]] | None,
    clip: tuple[float, float],
    res: ResilienceConfig,
    reference: NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """Score the centroid detector as the module docs say; plain JSON values.

    ``unseen``: benign inputs outside ``x`` to calibrate on and to check the calibration
    on. Without them (the measured sample is the whole test split) a seeded half of
    ``x`` calibrates and the other half is measured. ``reference``: benign inputs the
    centroids are fitted on (the training inputs), so that they and the threshold come
    from independent data."""
    from movingtarget.attacks.perturb.registry import craft
    from movingtarget.defenses.centroid import CentroidDetector
    from movingtarget.defenses.near_repeat import split_unseen

    held: NDArray[np.float32] | None
    if unseen is None:
        # the measured clean inputs of the other half are the held-out check
        half_a, half_b = split_unseen(np.arange(len(x)), res.seed)
        cal, held = x[half_a], None
        x, y, correct = x[half_b], y[half_b], correct[half_b]
    else:
        cal, held = unseen

    detector = CentroidDetector(false_alarm=res.detection_false_alarm)
    calibration = detector.calibrate(cal, held, model=model, reference=reference)
    threshold = float(detector.threshold or 0.0)
    benign = detector.score(x)
    pick = np.flatnonzero(correct)[: res.detection_inputs]
    xs, ys = x[pick], y[pick]
    rows: list[dict[str, Any]] = []
    budgets: dict[str, dict[str, Any]] = {
        "fgsm": {"norm": "inf", "eps": res.eps_linf},
        "pgd": {"norm": "inf", "eps": res.eps_linf},
        "deepfool": {},
        "jsma": {},
    }
    for name in ATTACKS:
        out = craft(name, est, xs, ys, seed=res.seed, **budgets[name])
        hit = out.success
        # the score of the class the model now gives each successful example
        scores = detector.score(out.x_adv[hit], out.adv[hit])
        rows.append(
            {
                "inputs": name,
                "crafted": len(pick),
                "success_rate": out.success_rate,
                "median_linf": float(np.median(out.linf[hit])) if hit.any() else float("nan"),
                **separation(benign, scores, threshold).row(),
            }
        )
    noise = np.random.default_rng(res.seed).uniform(
        -res.near_duplicate_noise, res.near_duplicate_noise, x.shape
    )
    near = np.clip(x + noise, clip[0], clip[1]).astype(np.float32)
    rows.append(
        {
            "inputs": f"benign near-duplicates (±{res.near_duplicate_noise:g} noise)",
            "crafted": len(x),
            "success_rate": float("nan"),
            "median_linf": float(np.abs(near - x).reshape(len(x), -1).max(axis=1).mean()),
            **separation(benign, detector.score(near), threshold).row(),
        }
    )
    return {
        "false_alarm": res.detection_false_alarm,
        "threshold": threshold,
        "calibration": calibration.as_dict(),
        "calibrated_on_half_of_sample": unseen is None,
        "benign_alarms": float((benign > threshold).mean()),
        "benign": len(x),
        "rows": rows,
    }
