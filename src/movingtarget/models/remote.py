"""A live gateway as a black-box model, for libraries that expect ``predict`` /
``predict_proba`` (scikit-learn style, the Adversarial Robustness Toolbox's
black-box estimators).

The gateway never reveals probabilities, so ``predict_proba`` is one-hot on the
answered class; an ABSTAIN row is uniform (``1/k`` everywhere), and ``predict``
returns ``-1`` there. Every call is real traffic: it is remembered, rate-limited
and audited like any client's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.answers import ABSTAIN


class RemoteModel:
    """The model behind a gateway at ``url``, queried with API key ``key``.

    Parameters
    ----------
    url:
        The gateway, e.g. ``http://127.0.0.1:8000``.
    key:
        An API key token (``movingtarget keys create``).
    max_inputs:
        Inputs per request (the gateway's ``--max-inputs``).
    max_wait_s:
        Longest total time one request may wait out ``429`` answers.

    Examples
    --------
    >>> model = RemoteModel("http://127.0.0.1:8000", "mt_...")    # doctest: +SKIP
    >>> model.n_classes, model.input_shape                        # doctest: +SKIP
    (10, (64,))
    >>> model.predict(x[:3])                                      # doctest: +SKIP
    array([ 4, -1,  7])
    """

    def __init__(self, url: str, key: str, *, max_inputs: int = 256, max_wait_s: float = 600.0):
        from movingtarget.attacks.remote.client import GatewayClient

        self.url = url
        self.max_inputs = int(max_inputs)
        self._client = GatewayClient(url, key, max_wait_s=max_wait_s)
        meta = self._client.metadata()
        self.name: str = meta["name"]
        self.version: str = meta["versions"][0]
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in meta["inputs"][0]["shape"][1:])
        self.n_classes: int = int(meta["parameters"]["n_classes"])
        self.last_reasons: list[str] = []

    def predict(self, x: NDArray[Any]) -> NDArray[np.int64]:
        """The gateway's answer per input: a class, or ``-1`` (ABSTAIN)."""
        arr = np.asarray(x, dtype=np.float32).reshape(-1, *self.input_shape)
        labels = np.empty(len(arr), np.int64)
        reasons: list[str] = []
        from movingtarget.answers import Reason

        names = [r.label for r in Reason]
        for start in range(0, len(arr), self.max_inputs):
            got = self._client.classify(arr[start : start + self.max_inputs])
            labels[start : start + len(got.labels)] = got.labels
            reasons += [names[r] for r in got.reasons.tolist()]
        self.last_reasons = reasons
        return labels

    def predict_proba(self, x: NDArray[Any]) -> NDArray[np.float64]:
        """One-hot rows on the answered class; uniform rows where the gateway abstained."""
        labels = self.predict(x)
        proba = np.zeros((len(labels), self.n_classes), np.float64)
        answered = labels != ABSTAIN
        proba[np.flatnonzero(answered), labels[answered]] = 1.0
        proba[~answered] = 1.0 / self.n_classes
        return proba

    def close(self) -> None:
        """Close the connection."""
        self._client.close()
