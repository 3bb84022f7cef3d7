"""``movingtarget export``: write a reference model as a file another runtime runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from movingtarget.errors import ConfigError, DataError

#: The round trip ``export`` checks: the same argmax everywhere, probabilities this close.
ROUND_TRIP_ATOL = 1e-5


def export(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="CONFIG|DATASET:MODEL",
            help="An experiment config (its dataset and model, trained as `run` trains "
            "them) or DATASET:MODEL as `serve` takes it (digits:logistic). Default: "
            "hello-world.",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The file to write; its suffix picks the format: .onnx (any), .pt "
            "(TorchScript) or .pt2 (torch.export) for torch models, .skops for scikit-learn.",
        ),
    ] = Path("model.onnx"),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a config field: model.epochs=1."),
    ] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="Torch device.")] = "auto",
    cache_dir: Annotated[Path | None, typer.Option(help="Where trained models are cached.")] = None,
) -> None:
    """Write a reference model (logistic, mlp, cnn, torch-mlp, ...) as ONNX, TorchScript,
    a torch.export program or skops, and check the round trip on the test split."""
    from movingtarget.datasets import load_dataset
    from movingtarget.experiment import load_config
    from movingtarget.models import build_model, load_model_file
    from movingtarget.models.export import export_model
    from movingtarget.models.files import file_info

    overrides = list(set_ or [])
    if source and ":" in source and not Path(source).exists():
        dataset_name, model_name = (p.strip() for p in source.split(":", 1))
        overrides = [f"dataset.name={dataset_name}", f"model.name={model_name}", *overrides]
        source = None
    cfg = load_config(source, overrides)
    if cfg.model.name == "file":
        raise ConfigError("export writes a trained reference model; the model is already a file")
    split = load_dataset(cfg.dataset.name, **cfg.dataset.params).split(
        test_size=cfg.test_size, seed=cfg.split_seed
    )
    model = build_model(
        cfg.model.name,
        split,
        seed=cfg.model_seed,
        device=device,
        cache_dir=cache_dir,
        **cfg.model.params,
    )
    path = export_model(model, out, split.x_test[:8])
    # read it back as a user would, and hold it to the original on the whole test split
    trusted = _trusted_types(path)
    again = load_model_file(
        path,
        n_classes=split.n_classes,
        input_shape=split.input_shape,
        trust=path.suffix == ".pt2",  # written just now, by this process
        trusted_types=trusted,
        device=device,
    )
    want = model.predict_proba(split.x_test)
    got = again.predict_proba(split.x_test)
    gap = float(np.abs(want - got).max())
    same = int((want.argmax(axis=1) == got.argmax(axis=1)).sum())
    if same != len(want) or gap > ROUND_TRIP_ATOL:
        raise DataError(
            f"{path}: the written model differs from the original on the test split "
            f"({len(want) - same} answers differ, max probability gap {gap:.2e})"
        )
    info = file_info(again)
    digest = info.sha256 if info is not None else ""
    typer.echo(f"wrote {path} ({cfg.dataset.display}, {cfg.model.display}; sha256 {digest})")
    typer.echo(
        f"round trip on the test split: same argmax on all {len(want)} inputs, max "
        f"probability gap {gap:.1e}"
    )
    if trusted:
        typer.echo(
            f"loading it needs trusted_types = {list(trusted)!r} (skops does not audit them)"
        )
    if path.suffix == ".pt2":
        typer.echo("loading it needs trust = true (torch reads .pt2 programs with pickle)")


def _trusted_types(path: Path) -> tuple[str, ...]:
    """The types of a skops file just written that skops does not trust by default."""
    if path.suffix != ".skops":
        return ()
    import skops.io as sio

    return tuple(sio.get_untrusted_types(file=path))
