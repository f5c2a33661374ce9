"""The `cds` command line (typer): run the pipeline, run one stage, sample a registered model,
serve scheduled retraining, list targets."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm.auto import tqdm

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="One-step samplers for unnormalized densities: DIS teacher, CDDS and SCDS.",
)


def _print_version(value: bool) -> None:
    if value:
        from cds import __version__

        typer.echo(f"cds {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """One-step samplers for unnormalized densities: DIS teacher, CDDS and SCDS."""


#: Quiet, offline defaults for Prefect, DVC and MLflow (explicit settings win).
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
#: Exit statuses: bad input (nothing was computed) and transient failures (worth a retry).
EXIT_BAD_INPUT = 2
EXIT_TRANSIENT = 75

ProjectOption = Annotated[
    Path, typer.Option(help="project directory (holds params.yaml and dvc.yaml)")
]


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def _input_errors() -> tuple[type[Exception], ...]:
    from cds.checkpoints import CheckpointError
    from cds.config import ParamsError
    from cds.pipeline.stages.common import StageInputError
    from cds.targets import InvalidUserTargetError

    return (
        ParamsError,
        StageInputError,
        CheckpointError,
        InvalidUserTargetError,
        ValueError,
        FileNotFoundError,
    )


def _quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="the new project's directory (new or empty)")],
    target: Annotated[
        str | None,
        typer.Option(
            help="your density as module:Class; ./module.py is copied into the project's inputs/"
        ),
    ] = None,
    git: Annotated[bool, typer.Option(help="make the project a git repository")] = True,
) -> None:
    """Start a pipeline project in DIRECTORY: dvc.yaml, a complete params.yaml (gmm9, or your
    target, with its preset), inputs/, a DVC repository and a git one. Then in it: `cds run`."""
    from cds.config import load_params
    from cds.pipeline.workspace import USER_TARGET, init_project
    from cds.presets import DEFAULT_PRESET, target_preset

    module = None
    name = "gmm9"
    if target is not None:
        if not USER_TARGET.match(target):
            _fail(
                f"target = {target!r}: expected module:Class with a top-level module (a file "
                "module.py here), e.g. my_density:MyDensity"
            )
        module = Path.cwd() / f"{target.partition(':')[0]}.py"
        if not module.is_file():
            _fail(
                f"target = {target!r}: {module} does not exist; run cds init where the module "
                "is, or put it in the project's inputs/ yourself and set target.name"
            )
        name = target
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        _fail(f"directory = {str(directory)!r}: exists and is not an empty directory")
    _quiet()
    preset = target_preset(name) or DEFAULT_PRESET
    params = load_params(None, [f"target.name={name}"], preset)
    root = init_project(directory.resolve(), params, git=git, module=module)
    typer.echo(f"project:  {root}" + ("" if git else " (no git)"))
    typer.echo(f"target:   {name} (preset {preset})")
    typer.echo(f"next:     cd {directory} && cds run --preset smoke   (a one-minute check)")
    typer.echo("          cds run                                (the full budget)")


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
def presets() -> None:
    """List the presets (`cds run --preset NAME`, `cds.fit(preset=NAME)`) and what each is for."""
    from cds.presets import PRESETS_DIR, preset_names

    for name in preset_names():
        first = (PRESETS_DIR / f"{name}.yaml").read_text().splitlines()[0]
        typer.echo(f"{name:<15}{first.removeprefix('#').strip()}")


def _chosen_preset(asked: str | None, base: Path, overrides: list[str]) -> str | None:
    """The preset a run lays over its params (`cds.presets.chosen_preset`: the one asked for, or
    the own preset of the target `--set target.name=…` switches to, `default` for one without).
    Says which, and the overrides."""
    from cds.config import load_params
    from cds.presets import DEFAULT_PRESET, PRESETS_DIR, chosen_preset

    named = [
        item.partition("=")[2].strip() for item in overrides if item.startswith("target.name=")
    ]
    base_target = load_params(base).target.name
    preset = chosen_preset(asked, base_target, named[-1] if named else base_target)
    if preset is not None:
        if asked:
            how = "asked for"
        elif preset == DEFAULT_PRESET:
            how = f"target {named[-1]!r} has no preset of its own"
        else:
            how = f"the own preset of target {named[-1]!r}"
        typer.echo(f"preset:    {preset} ({how}; {PRESETS_DIR / preset}.yaml)", err=True)
    if overrides:
        typer.echo(f"overrides: {' '.join(overrides)}", err=True)
    return preset


def _write_params(project: Path, params: Any) -> None:
    """Make the validated `params` the project's params.yaml (the one file every stage reads,
    as `dvc exp run --set-param` does)."""
    from cds.pipeline.params_file import write_complete_params

    if write_complete_params(project / "params.yaml", params):
        typer.echo(f"params: wrote {project / 'params.yaml'} (git diff shows the change)", err=True)


@app.command()
def run(
    project: ProjectOption = Path("."),
    params: Annotated[
        Path | None, typer.Option(help="params YAML to use instead of the project's")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. teacher.n_steps=64")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="preset laid over the params before --set (cds presets lists them; 'none': "
            "not even the target's own)"
        ),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(min=0, help="seconds to wait for another run of this project to finish"),
    ] = 0.0,
) -> None:
    """Run the `retrain` flow: every stage through DVC, then MLflow logging and registration.

    With --set or --params, the resulting params are written to params.yaml (as `dvc exp run
    --set-param` does) and the run is saved as a DVC experiment (`dvc exp show`).
    Everything checkable (params, the target and its data, the model name) is checked before
    anything is written; the whole run holds the project's lock, so a second run is refused
    (exit 75, naming the holder) or waits `--wait` seconds, and changes nothing."""
    project = project.resolve()
    if not (project / "dvc.yaml").is_file():
        _fail(f"{project} has no dvc.yaml: run from the cds project directory or pass --project")
    from cds.config import ParamsError, load_params
    from cds.pipeline.project_lock import ProjectBusyError, project_lock
    from cds.pipeline.stages.common import probed_target

    try:
        preset = _chosen_preset(preset, params or project / "params.yaml", set_ or [])
        validated = load_params(params or project / "params.yaml", set_ or [], preset)
        with contextlib.chdir(project):  # paths in params are relative to the project
            probed_target(validated, project)
    except _input_errors() as err:
        _fail(str(err))
    _quiet()
    from cds.pipeline.dvc import StageFailedError, save_experiment
    from cds.pipeline.flows import retrain

    signal.signal(signal.SIGTERM, _stop)
    try:
        with project_lock(project, wait):
            if wait:  # another run may have changed params.yaml while this one waited
                try:
                    validated = load_params(params or project / "params.yaml", set_ or [], preset)
                except ParamsError as err:
                    _fail(str(err))
            _write_params(project, validated)
            summary = retrain(str(project))
            if set_ or params is not None or preset:  # params other than the committed ones
                summary["experiment"] = save_experiment(project)
    except ProjectBusyError as err:
        _fail(str(err), code=EXIT_TRANSIENT)
    except StageFailedError as err:
        _fail(
            f"stage {err.stage!r} failed (exit status {err.returncode}); see its output above",
            code=1,
        )
    _print_summary(project, summary)


#: Seconds `cds stage register` waits for another process of the project to finish.
REGISTER_WAIT_S = 300.0
#: Seconds a stopped run gives its stage processes to exit before it leaves anyway.
STOP_GRACE_S = 5.0


def _descendants(pid: int) -> list[int]:
    """Process ids below `pid` (Linux /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, frontier = [], [pid]
    while frontier:
        children = [c for p in frontier for c in parents.get(p, [])]
        out += children
        frontier = children
    return out


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop(signum: int, _frame: Any) -> None:
    """SIGTERM to `cds run`: stop the stage processes (their checkpoints are written atomically,
    so the next run resumes from the last one), then leave at once with 128 + signum, skipping
    the exit handlers that would keep retrying to send logs to a stopped Prefect server."""
    children = _descendants(os.getpid())
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_running(pid) for pid in children):
        time.sleep(0.1)
    from cds.pipeline.project_lock import abandon

    abandon()
    typer.secho(
        f"stopped by signal {signum}: the next `cds run` resumes from the last checkpoints",
        fg=typer.colors.RED,
        err=True,
    )
    sys.stderr.flush()
    os._exit(128 + signum)


def _print_summary(project: Path, summary: dict[str, Any]) -> None:
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(
        f"\nstages:    {', '.join(f'{k} {v}' for k, v in summary['stages'].items())}"
        f"\ndvc:       {'up to date' if summary['dvc_status_clean'] else 'NOT up to date'}"
        f"\nmetrics:   {project / 'data/eval/metrics.json'}   (dvc metrics show)"
        f"\nplots:     {project / 'data/eval/plots'}"
        f"\nregistry:  {summary['tracking_uri']}"
        f"\nmodel:     models:/{summary['model']}/{summary['version']} "
        f"(gate {summary['gate']}: {summary['gate_reason']})"
        f"\nchampion:  models:/{summary['model']}@champion = version {summary['champion']}"
        f"\nsample:    cds sample --model models:/{summary['model']}@champion -n 1000 --seed 0 "
        "--out samples.npy"
    )
    if summary.get("experiment"):
        typer.echo(f"experiment: {summary['experiment']}   (dvc exp show)")


@app.command()
def stage(
    name: Annotated[
        str, typer.Argument(help="target | teacher | fragments | student | evaluate | register")
    ],
    project: ProjectOption = Path("."),
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Run one stage on the project's params.yaml (what dvc.yaml calls)."""
    import importlib

    from cds.pipeline.layout import Layout
    from cds.pipeline.stage_graph import STAGES

    if name not in (*STAGES, "register"):
        _fail(f"stage = {name!r}: unknown; valid: {', '.join((*STAGES, 'register'))}")
    _quiet()
    from cds.config import load_params
    from cds.pipeline.project_lock import ProjectBusyError, project_lock
    from cds.pipeline.timings import add_timings

    layout = Layout(project.resolve())
    try:
        # registration is short: a concurrent one is waited for, then finds the version made
        with project_lock(layout.root, wait=REGISTER_WAIT_S if name == "register" else 0.0):
            started = time.perf_counter()
            params = load_params(layout.params)
            if name == "register":
                from cds.pipeline.publish import publish

                result = publish(params, layout, statuses={})
            else:
                module = importlib.import_module(f"cds.pipeline.stages.{name}")
                with contextlib.chdir(layout.root):  # params' paths are relative to it
                    result = module.run(params, layout, progress)
                add_timings(layout.root, name, {"stage_seconds": time.perf_counter() - started})
    except ProjectBusyError as err:
        _fail(str(err), code=EXIT_TRANSIENT)
    except _input_errors() as err:
        _fail(str(err))
    except Exception as err:
        if "database is locked" in str(err):
            _fail(str(err), code=EXIT_TRANSIENT)
        raise
    typer.echo(json.dumps(result, indent=2, default=str))


def _enclosing_project(start: Path) -> Path | None:
    """The nearest directory at or above `start` that holds a dvc.yaml."""
    return next((d for d in (start, *start.parents) if (d / "dvc.yaml").is_file()), None)


def _find_tracking_uri(start: Path) -> str | None:
    """MLFLOW_TRACKING_URI, else the mlflow.db of the nearest enclosing cds project, else the
    one beside the installed cds source tree (editable installs)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    import cds
    from cds.pipeline.tracking import project_store

    for directory in (start, *start.parents, Path(cds.__file__).resolve().parents[1]):
        if (directory / "dvc.yaml").is_file() and (directory / "mlflow.db").is_file():
            return project_store(directory)
    return None


#: Rows sampled and written per chunk by `cds sample` (memory stays O(chunk·D) for any n).
SAMPLE_CHUNK = 1_000_000


@app.command()
def sample(
    model: Annotated[
        str, typer.Option(help="model URI (e.g. models:/cds-gmm9@champion) or checkpoint file")
    ],
    n: Annotated[int, typer.Option("-n", min=1, help="number of samples")],
    out: Annotated[Path, typer.Option(help="output .npy file")],
    seed: Annotated[int, typer.Option(help="random seed (same seed, same samples)")] = 0,
    trust_target_code: Annotated[
        bool,
        typer.Option(help="import the user target the model names (only for files you trust)"),
    ] = False,
    device: Annotated[
        str,
        typer.Option(help="cpu, cuda, cuda:N or auto (CPU and CUDA give different samples)"),
    ] = "cpu",
) -> None:
    """Draw samples from a registered sampler (works from any directory).

    Samples are written in chunks of 10⁶ rows straight to the .npy file, so any n that fits on
    disk works; the file appears only when complete."""
    import mlflow

    from cds.devices import DeviceError, resolve_device
    from cds.samplers import load_sampler

    if not 0 <= seed < 2**63:
        _fail(f"--seed = {seed}: must be in [0, 2^63)")
    try:
        resolve_device(device, "--device")
    except DeviceError as err:
        _fail(str(err))
    out = out.expanduser()
    if out.is_dir() or not out.parent.is_dir():
        _fail(f"--out = {str(out)!r}: must be a file path in an existing directory")
    _quiet()
    uri = "a local file"
    project = _enclosing_project(Path.cwd().resolve())
    if project is not None:
        from cds.pipeline.project_inputs import use_project_inputs

        use_project_inputs(project)  # a model of a user target finds its module there
    if ":/" in model or not Path(model).is_file():
        uri = _find_tracking_uri(Path.cwd().resolve())
        if uri is None:
            _fail("no MLflow registry found: set MLFLOW_TRACKING_URI or run inside a cds project")
        mlflow.set_tracking_uri(uri)
    try:
        sampler = load_sampler(model, trust_target_code=trust_target_code, device=device)
    except (mlflow.exceptions.MlflowException, *_input_errors()) as err:
        _fail(f"cannot load {model!r} from {uri}: {err}")
    need, free = n * sampler.dim * 4, shutil.disk_usage(out.parent).free
    if need > free:
        _fail(f"-n = {n}: {need / 1e9:.1f} GB of samples, {free / 1e9:.1f} GB free in {out.parent}")
    write_samples(sampler, n, seed, out)
    typer.echo(f"{n} samples of {model} ({sampler.method}, NFE {sampler.nfe}) → {out}", err=True)


def write_samples(sampler: Any, n: int, seed: int, out: Path) -> None:
    """n float32 samples into the .npy file `out`, chunk by chunk, atomically."""
    import numpy as np
    import torch

    from cds.checkpoints import atomic_write

    generator = torch.Generator(device=sampler.device).manual_seed(seed)

    def write(fh: Any) -> None:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, sampler.dim)}
        np.lib.format.write_array_header_1_0(fh, header)
        for start in tqdm(range(0, n, SAMPLE_CHUNK), desc="sample", disable=n <= SAMPLE_CHUNK):
            rows = min(SAMPLE_CHUNK, n - start)
            fh.write(sampler.sample(rows, generator).cpu().numpy().astype("<f4").tobytes())

    atomic_write(out, write)


@app.command()
def schedule(
    cron: Annotated[str, typer.Option(help='cron schedule, e.g. "0 3 * * *"')],
    project: ProjectOption = Path("."),
    name: Annotated[str, typer.Option(help="deployment name")] = "scheduled",
) -> None:
    """Retrain on a schedule: serve the `retrain` deployment against a running
    `prefect server start` (PREFECT_API_URL must point at it); blocks until interrupted. (To
    serve a registered sampler over REST, use `mlflow models serve`; see README.)"""
    if not os.environ.get("PREFECT_API_URL"):
        _fail(
            "schedules need a running Prefect server: start `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    project = project.resolve()
    if not (project / "dvc.yaml").is_file():
        _fail(f"{project} has no dvc.yaml: pass --project")
    _quiet()
    from cds.pipeline.flows import retrain

    typer.echo(f"serving retrain/{name} on {cron!r} for {project}", err=True)
    sys.stdout.flush()
    retrain.serve(name=name, cron=cron, parameters={"project": str(project)})


@app.command(deprecated=True, help="Deprecated name of `cds schedule` (it does not serve models).")
def serve(
    cron: Annotated[str, typer.Option(help='cron schedule, e.g. "0 3 * * *"')],
    project: ProjectOption = Path("."),
    name: Annotated[str, typer.Option(help="deployment name")] = "scheduled",
) -> None:
    typer.echo("`cds serve` is deprecated: use `cds schedule` (retraining on a schedule)", err=True)
    schedule(cron, project, name)


@app.command("sweep")
def sweep_command(
    grid: Annotated[Path, typer.Option(help="sweep YAML: targets, methods, seeds, overrides")],
    project: ProjectOption = Path("."),
    runner: Annotated[str, typer.Option(help="local (sequential) or dask")] = "local",
    workers: Annotated[int, typer.Option(min=1, help="Dask LocalCluster workers")] = 2,
    threads_per_worker: Annotated[int, typer.Option(min=1, help="Dask threads per worker")] = 1,
    address: Annotated[
        str | None, typer.Option(help="existing Dask scheduler, e.g. tcp://host:8786")
    ] = None,
    torch_threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads per cell (default: cores / cells)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="sweep directory")] = None,
    dvc_remote: Annotated[
        str | None, typer.Option(help="DVC remote URL shared by all cells (any fsspec URL)")
    ] = None,
) -> None:
    """Run a grid of pipeline runs; writes results.json and results.md in the sweep directory."""
    if runner not in ("local", "dask"):
        _fail(f"runner = {runner!r}: must be 'local' or 'dask'")
    if address and runner != "dask":
        _fail("--address needs --runner dask")
    project = project.resolve()
    if not (project / "dvc.yaml").is_file():
        _fail(f"{project} has no dvc.yaml: pass --project")
    from cds.pipeline.sweep import load_grid, run_sweep

    try:
        spec = load_grid(grid)
    except _input_errors() as err:
        _fail(str(err))
    _quiet()
    directory = out or project / "runs" / "sweeps" / spec.name
    sweep_id, rows = run_sweep(
        spec,
        project,
        directory,
        runner,  # type: ignore[arg-type]
        workers,
        threads_per_worker,
        address,
        torch_threads,
        dvc_remote,
    )
    typer.echo((directory / "results.md").read_text())
    failed = [row["cell"] for row in rows if row["status"] != "ok"]
    typer.echo(
        f"sweep {sweep_id}: {len(rows) - len(failed)} ok, {len(failed)} failed; "
        f"results in {directory / 'results.json'}"
    )
    if failed:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
