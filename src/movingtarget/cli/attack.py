"""``movingtarget attack URL``: run the arena's adversaries against a live gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from movingtarget.cli import output_folder
from movingtarget.errors import ConfigError


def _params(items: list[str] | None) -> dict[str, Any]:
    import tomllib

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: write NAME=VALUE, e.g. target=3")
        key, text = item.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text
    return out


def attack(
    url: Annotated[str, typer.Argument(help="The gateway, e.g. http://127.0.0.1:8000.")],
    key: Annotated[
        list[str],
        typer.Option(
            "--key", metavar="KEY", help="The attacker's API key (repeat: several accounts)."
        ),
    ],
    attack_name: Annotated[
        str,
        typer.Option("--attack", metavar="NAME", help="A registered attack (movingtarget list)."),
    ] = "test-set",
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", metavar="NAME=VALUE", help="Attack parameter NAME=VALUE (repeatable)."
        ),
    ] = None,
    dataset: Annotated[
        str, typer.Option(metavar="NAME", help="The attacker's and benign users' data.")
    ] = "digits",
    budget: Annotated[int, typer.Option(help="m: adversarial queries to send.", min=1)] = 1000,
    benign_key: Annotated[
        list[str] | None,
        typer.Option("--benign-key", metavar="KEY", help="A benign user's key (repeatable)."),
    ] = None,
    benign_ratio: Annotated[
        float, typer.Option(help="Benign queries per adversarial query.", min=0)
    ] = 0.0,
    benign_repeats: Annotated[
        bool,
        typer.Option(
            "--benign-repeats",
            help="Let benign users cycle through their pool when it is smaller than their "
            "queries (refused by default: it manufactures benign repeats).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the adversary and the traffic.")] = 0,
    test_size: Annotated[float, typer.Option(help="Test share of the dataset split.")] = 0.3,
    split_seed: Annotated[int, typer.Option(help="Seed of the dataset split.")] = 0,
    max_wait: Annotated[
        float, typer.Option(help="Longest total wait on 429s per request (seconds).", min=0)
    ] = 600.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder.")] = Path(
        "results/attack"
    ),
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="DATASET:MODEL",
            help="White-box attacks: the attacker's exact copy of the served model, trained "
            "here with the split settings above; refused unless its version matches the "
            "gateway's.",
        ),
    ] = None,
) -> None:
    """Attack a live gateway over HTTP; the same event log, summary and report as `run`."""
    from movingtarget.attacks.remote.attack import RemoteAttack, run_remote_attack
    from movingtarget.report.tables import markdown_table

    output_folder(out)

    spec = RemoteAttack(
        url=url,
        keys=list(key),
        attack=attack_name,
        params=_params(param),
        dataset=dataset,
        budget=budget,
        benign_keys=list(benign_key or []),
        benign_ratio=benign_ratio,
        benign_repeats=benign_repeats,
        seed=seed,
        test_size=test_size,
        split_seed=split_seed,
        max_wait_s=max_wait,
        model=model,
    )
    result = run_remote_attack(spec, out)
    print(markdown_table([result.row]))
    print(
        f"\nr~ = {result.row['r_tilde']:.4f} over {budget} queries; 429 waited out "
        f"{result.refused} times ({result.waited_s:.0f} s)"
    )
    print(f"results: {out} (summary.json, report.md, logs/, queries.csv)")
