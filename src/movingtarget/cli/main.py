"""``movingtarget``: run experiments, list components, render reports."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from movingtarget._optional import missing_dependency
from movingtarget.cli import command_group, output_folder, plain_metavars
from movingtarget.errors import MovingTargetError, NoticeWarning

app = command_group(
    "movingtarget", "Correlated test-time attacks on classifiers, and dynamic defenses."
)
console = Console()
err_console = Console(stderr=True)


def query_progress() -> Progress:
    """A progress bar of adversarial queries on stderr (off when it is not a terminal)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=True,
    )


def _summary_table(rows: list[dict[str, object]], title: str) -> Table:
    from movingtarget.report.tables import TABLE_COLUMNS, table_rows

    table = Table(title=title, show_lines=False)
    for _, header in TABLE_COLUMNS:
        table.add_column(header, justify="left" if header in ("attack", "defense") else "right")
    for cells in table_rows(rows):
        table.add_row(*cells)
    return table


#: Options ``run`` and ``resilience`` share.
ConfigArg = Annotated[
    str | None,
    typer.Argument(
        help="A TOML config file, or a shipped config: hello-world, synthetic, "
        "spambase, arms-race, arms-race-fashion, stateful, dynamic (`movingtarget list`). "
        "Default: hello-world."
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config field: KEY=VALUE, e.g. dataset.path=spam.csv.",
    ),
]
DeviceOption = Annotated[
    str, typer.Option(metavar="DEVICE", help="Torch device for neural models: auto, cpu, cuda.")
]
CacheOption = Annotated[Path | None, typer.Option(help="Where trained models are cached.")]


@app.command()
def run(
    config: ConfigArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder.")] = Path("results"),
    seeds: Annotated[
        int | None, typer.Option(help="Number of seeds (overrides the config).", min=1)
    ] = None,
    queries: Annotated[
        int | None, typer.Option(help="m: adversarial queries per deployment.", min=1)
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores).", min=1)
    ] = None,
    set_: SetOption = None,
    device: DeviceOption = "auto",
    cache_dir: CacheOption = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Run the deployments on a Dask cluster: tcp://HOST:PORT (a running "
            "`dask scheduler`) or local:N (N local worker processes).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Keep the deployments an interrupted run of the same config finished "
            "(OUT/tasks) and run only the rest.",
        ),
    ] = False,
) -> None:
    """Run an experiment: every attack against every defense, for every seed."""
    from movingtarget.experiment import load_config, record_then
    from movingtarget.report import write_report

    sizes = []  # --seeds and --queries size every run, --set only the main one
    if seeds is not None:
        sizes.append(f"seeds={seeds}")
    if queries is not None:
        sizes.append(f"arena.queries={queries}")
    if cluster is not None:
        from movingtarget.errors import ConfigError
        from movingtarget.experiment.cluster import parse_cluster

        if workers is not None:
            raise ConfigError(
                "--workers sizes the local process pool; with --cluster the cluster's "
                "workers run the deployments: give one of them"
            )
        parse_cluster(cluster)  # a bad value fails before the config is read
    cfg = load_config(config, [*(set_ or []), *sizes])
    # a companion's bad config fails before minutes of the main run, not after
    then = [load_config(name, sizes) for name in cfg.then]
    output_folder(out)
    how: dict[str, Any] = {"workers": workers, "cache_dir": cache_dir, "device": device}
    how |= {"cluster": cluster, "resume": resume}
    results = _run_one(cfg, out, **how)
    names = []
    for sub in then:
        _run_one(sub, out / sub.name, **how)
        names.append(sub.name)
    if names:
        record_then(out, names)
    write_report(out)
    _print_results(cfg, results)
    for sub, name in zip(then, names, strict=True):
        from movingtarget.experiment import load_results
        from movingtarget.report.matrix import matrix_lines

        rows, runs = load_results(out / name)
        print(f"\nthen {name}: {sub.dataset.display}, {sub.model.display}\n")
        print("\n".join(matrix_lines(rows, runs)))
    print(f"results: {out} (summary.json, report.md, r_tilde.png, logs/)")


def _run_one(
    cfg: Any,
    out: Path,
    *,
    workers: int | None,
    cache_dir: Path | None,
    device: str,
    cluster: str | None = None,
    resume: bool = False,
) -> Any:
    """Run one experiment under a progress bar; write its own report."""
    from movingtarget.experiment import run_experiment
    from movingtarget.report import write_report

    total = len(cfg.seeds) * len(cfg.attacks) * len(cfg.defenses) * cfg.arena.queries
    progress = query_progress()
    with progress:
        bar = progress.add_task(f"{cfg.name}: adversarial queries", total=total)
        results = run_experiment(
            cfg,
            out,
            workers=workers,
            cache_dir=cache_dir,
            device=device,
            on_task_done=lambda n: progress.advance(bar, n),
            cluster=cluster,
            resume=resume,
            on_resumed=lambda found, n: progress.console.print(
                f"{cfg.name}: resumed: {found} of {n} deployments already finished in "
                f"{out / 'tasks'}, skipped; running {n - found}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            ),
        )
    write_report(out)
    return results


def _print_results(cfg: Any, results: Any) -> None:
    """The summary table, the verdicts and the warnings of one experiment."""
    title = (
        f"{cfg.name}: {cfg.dataset.display}, {cfg.model.display}, r = {results.r:.4f} (test split)"
    )
    if console.is_terminal:
        console.print(_summary_table(results.rows, title))
    else:  # piped or logged: a Markdown table that no terminal width wraps
        from movingtarget.report.tables import markdown_table

        print(f"{title}\n\n{markdown_table(results.rows)}\n")
    judged = [r for r in results.rows if r.get("verdict") in ("agrees", "disagrees", "exceeds")]
    others = [r for r in judged if r["verdict"] != "agrees"]
    print(f"predictions: {len(judged) - len(others)} of {len(judged)} rows agree")
    for row in others:
        print(f"{row['verdict']}: {row['attack']} x {row['defense']} (z = {row['z']:.1f})")
    for row in results.rows:
        if row.get("warning"):
            print(f"warning: {row['attack']} x {row['defense']}: {row['warning']}")


@app.command()
def resilience(
    config: ConfigArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("results"),
    inputs: Annotated[
        int | None, typer.Option(help="Held-out inputs to measure (overrides the config).", min=1)
    ] = None,
    set_: SetOption = None,
    device: DeviceOption = "auto",
    cache_dir: CacheOption = None,
) -> None:
    """Model resilience: the smallest perturbation that changes each input's class."""
    from movingtarget.experiment import load_config
    from movingtarget.experiment.resilience import run_resilience
    from movingtarget.report.resilience import (
        comparison_lines,
        detection_lines,
        summary_lines,
        write_resilience_report,
    )

    overrides = list(set_ or [])
    if inputs is not None:
        overrides.append(f"resilience.inputs={inputs}")
    cfg = load_config(config, overrides)
    output_folder(out)
    with err_console.status("resilience") as status:
        result = run_resilience(
            cfg,
            cfg.resilience,
            device=device,
            cache_dir=cache_dir,
            on_step=lambda text: status.update(text),
        )
    path = write_resilience_report(result, out)
    print(
        f"{cfg.name}: {result.model} on {result.dataset}, {result.inputs} inputs, "
        f"{result.correct} correct; attacks through {result.estimator}\n"
    )
    print("\n".join(summary_lines(result)))
    for title, table in (
        ("centroid detector (AUC against clean inputs)", detection_lines(result)),
        ("models compared", comparison_lines(result)),
    ):
        if table:
            print(f"\n{title}:\n" + "\n".join(table))
    print(f"\nreport: {path} ({result.seconds:.1f} s)")


@app.command()
def fading(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path(
        "results/fading"
    ),
    members: Annotated[
        list[int] | None,
        typer.Option(help="Pool size K (repeat for several; default 3 and 5)."),
    ] = None,
    every: Annotated[
        list[int] | None,
        typer.Option(
            help="Refresh interval in queries, 0: never (repeat for several; default 0, 300, 75)."
        ),
    ] = None,
    queries: Annotated[int, typer.Option(help="m: adversarial queries per deployment.")] = 1200,
    window: Annotated[int, typer.Option(help="Adversarial queries per time window.")] = 200,
    seeds: Annotated[int, typer.Option(help="Number of seeds.")] = 5,
    dataset: Annotated[str, typer.Option(help="Dataset (`movingtarget list`).")] = "digits",
    member: Annotated[str, typer.Option(help="The pool's member model.")] = "logistic",
    cache_dir: CacheOption = None,
) -> None:
    """White fading to black box: a white-box attacker (an exact copy of the defense at
    time 0, screened offline) against a defense that keeps refreshing its pool."""
    from movingtarget.experiment.fading import FadingConfig, run_fading
    from movingtarget.report.fading import fading_table, write_fading_report

    given: dict[str, Any] = {"queries": queries, "window": window, "seeds": seeds}
    if members:
        given["members"] = tuple(members)
    if every:
        given["every"] = tuple(every)
    cfg = FadingConfig(dataset=dataset, member=member, **given)
    output_folder(out)
    total = len(cfg.members) * len(cfg.every) * cfg.seeds * cfg.queries
    progress = query_progress()
    with progress:
        bar = progress.add_task("fading: adversarial queries", total=total)
        result = run_fading(
            cfg,
            cache_dir=None if cache_dir is None else str(cache_dir),
            on_run_done=lambda n: progress.advance(bar, n),
        )
    path = write_fading_report(result, out)
    print("\n".join(fading_table(result.rows(), cfg.window)))
    print(f"\nreport: {path}, {out / 'fading.png'} ({result.seconds:.0f} s)")


@app.command("list")
def list_components() -> None:
    """List every registered dataset, model, mechanism, defense and attack."""
    from movingtarget.attacks import ATTACKS
    from movingtarget.attacks.perturb import PER_INPUT_ATTACKS
    from movingtarget.datasets import DATASETS
    from movingtarget.defenses import COMPOSITIONS, MECHANISMS
    from movingtarget.experiment import BUILTIN_CONFIGS
    from movingtarget.models import MODELS
    from movingtarget.registry import BUILTIN

    def named(registry: Any, name: str) -> str:
        # a plugin's name says which installed package provided it
        origin = registry.origin(name)
        return name if origin == BUILTIN else escape(f"{name} [{origin}]")

    def names(registry: Any) -> str:
        return ", ".join(named(registry, n) for n in registry.names())

    table = Table(show_header=True)
    table.add_column("box")
    table.add_column(escape("names (a plugin's: [the package that provided it])"))
    table.add_row("datasets", names(DATASETS))
    table.add_row("models", names(MODELS))
    table.add_row("mechanisms", names(MECHANISMS))
    table.add_row(
        "defenses", "\n".join(f"{named(COMPOSITIONS, k)}: {v}" for k, v in COMPOSITIONS.items())
    )
    table.add_row("attacks", names(ATTACKS))
    table.add_row(
        "per-input attacks", "\n".join(spec.describe() for spec in PER_INPUT_ATTACKS.values())
    )
    table.add_row("configs", ", ".join(BUILTIN_CONFIGS))
    broken = [
        line
        for registry in (DATASETS, MODELS, MECHANISMS, COMPOSITIONS, ATTACKS)
        for line in (registry.plugins.errors if registry.plugins else [])
    ]
    if broken:
        table.add_row("broken plugins", escape("\n".join(broken)))
    console.print(table)


@app.command()
def report(results: Annotated[Path, typer.Argument(help="A results folder from `run`.")]) -> None:
    """Re-render report.md and the plot of a results folder."""
    from movingtarget.report import write_report

    path = write_report(results)
    console.print(f"wrote {path}")


# the gateway's commands (serve, keys, attack) live in their own module
from movingtarget.cli.serve import register as register_gateway  # noqa: E402

register_gateway(app)

from movingtarget.cli.export import export  # noqa: E402

app.command("export")(export)


def _user_error(exc: Exception) -> int:
    # the message as plain text (no markup, no wrapping): paths and brackets intact
    err_console.print(Text.assemble(("error:", "red"), f" {exc}"), soft_wrap=True)
    return 2


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    # a broken plugin or a trusted pickle is one line, like a user error: no source line
    if issubclass(category, NoticeWarning):
        err_console.print(Text.assemble(("warning:", "yellow"), f" {message}"), soft_wrap=True)
        return
    _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2, never a traceback.

    Usage errors (unknown flags, bad flag values) are Typer's own one-line messages.
    """
    warnings.showwarning = _show_warning
    try:
        command = plain_metavars(typer.main.get_command(app))
        command.main(args=argv, prog_name="movingtarget", standalone_mode=True)
    except MovingTargetError as exc:
        return _user_error(exc)
    except ImportError as exc:
        # an optional dependency a command imports lazily: name the extra, not a traceback
        args = sys.argv[1:] if argv is None else argv
        command = next((a for a in args if not a.startswith("-")), "")
        missing = missing_dependency(exc, f"`movingtarget {command}`" if command else "this")
        if missing is None:
            raise
        return _user_error(missing)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
