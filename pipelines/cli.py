"""The `cds` command line (typer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="One-step samplers for unnormalized densities: DIS teacher, CDDS and SCDS.",
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def targets() -> None:
    """List every built-in target: dimension, exact samples, known log Z."""
    from cds.targets import get_target, target_names

    typer.echo(f"{'name':<15}{'dim':>6}  {'exact samples':<14}{'log Z'}")
    for name in target_names():
        t = get_target(name)
        log_z = "unknown" if t.log_Z is None else f"{t.log_Z:.6f}"
        typer.echo(f"{name:<15}{t.dim:>6}  {'yes' if t.has_exact_samples else 'no':<14}{log_z}")


@app.command()
def run(
    params: Annotated[
        Path | None, typer.Option(help="params YAML (default: params.yaml if present)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. teacher.n_steps=64")
    ] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("data"),
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train the DIS teacher on the configured target and evaluate it against the noise floor."""
    from cds.checkpoints import CheckpointError
    from cds.config import ParamsError, load_params
    from cds.targets import InvalidUserTargetError
    from pipelines.teacher_job import run_teacher_job

    if params is None and Path("params.yaml").is_file():
        params = Path("params.yaml")
    try:
        p = load_params(params, set_ or [])
        report = run_teacher_job(p, out, progress=progress)
    except (ParamsError, CheckpointError, InvalidUserTargetError, ValueError, OSError) as err:
        _fail(str(err))
    typer.echo(json.dumps(report, indent=2))
    typer.echo(
        f"\nmetrics: {out / 'eval' / 'metrics.json'}\nplot:    {out / 'eval' / 'samples.png'}"
    )
