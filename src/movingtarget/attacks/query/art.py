"""ART's query-based attacks as arena adversaries (through :mod:`.bridge`).

==============  =========  =========  ==================================================
name            reads      targeted   budget (defaults, from :data:`PER_INPUT_ATTACKS`)
==============  =========  =========  ==================================================
hopskipjump     labels     yes / no   max_iter=20, max_eval=1000, init_eval=100, ...
square          scores     no         eps=0.1, max_iter=100, p_init=0.8, restarts=1
simba           scores     yes / no   epsilon=0.1, max_iter=1000, basis=dct
boundary        labels     yes / no   max_iter=500, delta=0.01, epsilon=0.01, ...
==============  =========  =========  ==================================================

The arena answers classes, so score-based attacks (Square, SimBA) get one-hot score
vectors: the threat model of a deployment that returns a label. Each attack runs on one
source input of the pool per ``generate`` call (``per_call``), its budget overriding the
defaults above (checked before ART is asked).

Seeds: ART's random attacks draw from numpy's global generator; the bridge seeds it for
each call from the adversary's seed and restores it after. HopSkipJump draws its starting
point from a ``RandomState()`` of its own that ART does not seed, so the adapter runs
that search itself on a seeded generator (uniform images until one is answered as
another class, or as the target) and hands ART the result (``x_adv_init``): a run is
reproducible query for query. Two differences from ART's own start: the source is asked
once more before the search (free with the attacker's cache), and a targeted start is
not first pulled toward the source by a binary search (HopSkipJump's first iteration
does that anyway).

ART is imported when an adversary is built; without it the error names the ``attacks``
extra.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from movingtarget.attacks.perturb.estimators import (
    data_range,
    image_shape,
    import_art,
    scores_view,
    wrap_black_box,
)
from movingtarget.attacks.perturb.registry import build_attack, check_budget, spec_of
from movingtarget.attacks.query.bridge import Predict, QueryAdversary, Sources
from movingtarget.errors import ConfigError

#: The ART attacks registered as arena adversaries.
QUERY_ATTACKS = ("hopskipjump", "square", "simba", "boundary")


class ArtAttack:
    """ART attack ``name`` as an attack function ``attack(predict, sources)``.

    Examples
    --------
    >>> attack = ArtAttack("square", (8, 8), 10, (0.0, 1.0), max_iter=5)
    >>> attack.budget["max_iter"], attack.budget["eps"]
    (5, 0.1)
    """

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...],
        n_classes: int,
        clip_values: tuple[float, float],
        *,
        norm: str | float | None = None,
        **budget: Any,
    ) -> None:
        if name not in QUERY_ATTACKS:
            raise ConfigError(
                f"query attack must be one of {', '.join(QUERY_ATTACKS)}, got {name!r}"
            )
        self.spec = spec_of(name)
        self.name = name
        self.budget = check_budget(self.spec, budget)
        self.shape = tuple(int(s) for s in shape)
        self.n_classes = int(n_classes)
        self.clip_values = (float(clip_values[0]), float(clip_values[1]))
        self.norm = norm
        if name == "square":
            _check_square_tiles(self.shape, float(self.budget["p_init"]))
        import_art()  # a missing ART fails here, naming the extra, not inside a thread

    def __call__(self, predict: Predict, sources: Sources) -> NDArray[np.float32]:
        est = wrap_black_box(
            predict,
            shape=self.shape,
            n_classes=self.n_classes,
            clip_values=self.clip_values,
            source="the arena's defense (one-hot scores)",
        )
        if self.spec.view:
            est = scores_view(est, image=self.spec.view == "image")
        targeted = sources.targeted
        attack = build_attack(self.name, est, norm=self.norm, targeted=targeted, **self.budget)
        aim = sources.target if targeted else sources.y
        onehot = np.eye(self.n_classes, dtype=np.float32)[aim]
        if self.name == "hopskipjump":
            return self._hopskipjump(attack, est, sources, onehot)
        out = attack.generate(x=est.to_art(sources.x), y=onehot)
        return est.from_art(out)

    def _hopskipjump(
        self, attack: Any, est: Any, sources: Sources, onehot: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """HopSkipJump from a seeded starting point, one source at a time.

        ART draws HopSkipJump's starting point from a ``RandomState()`` it never seeds.
        Here the same search runs on a seeded generator: up to ``init_size`` uniform
        images, asked one by one, until one is answered as another class than the
        source (untargeted) or as the target; ART then starts from it
        (``x_adv_init``). When none is found the attack has failed on that source, as
        ART's own search would, and the source comes back unchanged."""
        rng = np.random.default_rng(sources.seed)
        out = sources.x.copy()
        for i in range(len(sources.x)):
            x = est.to_art(sources.x[i : i + 1])
            if sources.targeted:
                goal = int(sources.target[i])
            else:  # another class than the one the source is answered as
                goal = int(np.argmax(est.art.predict(x), axis=1)[0])
            start = self._start(est, x, rng, goal, sources.targeted)
            if start is not None:
                adv = attack.generate(x=x, y=onehot[i : i + 1], x_adv_init=start)
                out[i : i + 1] = est.from_art(adv)
        return out

    def _start(
        self, est: Any, x: NDArray[np.float32], rng: np.random.Generator, goal: int, hit: bool
    ) -> NDArray[np.float32] | None:
        """The first of ``init_size`` seeded uniform images answered as ``goal``
        (``hit``) or as anything else (not ``hit``); None if none is."""
        lo, hi = self.clip_values
        for _ in range(int(self.budget["init_size"])):
            img = rng.uniform(lo, hi, size=x.shape).astype(np.float32)
            if (int(np.argmax(est.art.predict(img), axis=1)[0]) == goal) == hit:
                return img
        return None


def _check_square_tiles(shape: tuple[int, ...], p_init: float) -> None:
    """ART's Square starts with square tiles of side ``round(sqrt(p_init * h * w))``,
    which must be shorter than both sides of the image it sees (else ART fails inside
    ``generate`` with a bare ``ValueError``)."""
    _, h, w = image_shape(shape)
    side = max(round(math.sqrt(p_init * h * w)), 1)
    if side >= min(h, w):
        most = math.floor((min(h, w) - 0.5) ** 2 / (h * w) * 1000) / 1000  # rounded down
        raise ConfigError(
            f"square: inputs of shape {shape} are seen as a {h}x{w} image, too narrow for "
            f"its first tiles (side {side} from p_init={p_init:g}); set p_init to at most "
            f"{most:g}"
        )


def art_adversary(
    name: str,
    pool_x: NDArray[np.float32],
    pool_y: NDArray[np.int64],
    n_classes: int,
    *,
    seed: int = 0,
    target: int | None = None,
    on_abstain: str = "raise",
    abstain_class: int | None = None,
    cache: bool = True,
    per_call: int = 1,
    norm: str | float | None = None,
    clip_values: tuple[float, float] | list[float] | None = None,
    **budget: Any,
) -> QueryAdversary:
    """A :class:`QueryAdversary` running ART attack ``name`` on the pool.

    ``clip_values`` default to the pool's range; ``budget`` overrides the attack's
    defaults (see the module table).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    >>> adv = art_adversary("hopskipjump", x, np.array([0, 1, 2, 3]), 4, max_iter=2)
    >>> adv.name, adv.on_abstain, adv.cache
    ('hopskipjump', 'raise', True)
    """
    pool_x = np.asarray(pool_x, np.float32)
    clip = data_range(pool_x) if clip_values is None else tuple(clip_values)
    if len(clip) != 2:
        raise ConfigError(f"{name}: clip_values must be (min, max), got {clip_values!r}")
    if target is not None and spec_of(name).targeted == "never":
        raise ConfigError(f"attack {name!r} is untargeted only")
    attack = ArtAttack(
        name,
        pool_x.shape[1:],
        n_classes,
        (float(clip[0]), float(clip[1])),
        norm=norm,
        **budget,
    )
    adversary = QueryAdversary(
        pool_x,
        pool_y,
        n_classes,
        attack=attack,
        seed=seed,
        target=target,
        on_abstain=on_abstain,
        abstain_class=abstain_class,
        cache=cache,
        per_call=per_call,
    )
    adversary.name = name
    return adversary
