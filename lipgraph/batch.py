"""Audits of many models: ``lipgraph analyze a.onnx b.onnx folder/ …``.

Every model is one task — load, analyse, render its report — run in ``--jobs N`` local worker
processes, or on an existing Ray cluster (``--ray ADDRESS``, the ``[ray]`` extra). A task never
raises: bad input, an internal error or a crashed worker becomes that model's row, so one
model's failure never stops the others. The exit code is the worst of the models' codes.
"""
from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lipgraph.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_NOT_CERTIFIED, EXIT_OK, InputError
from lipgraph.options import Options

STATUS = {EXIT_OK: "certified", EXIT_NOT_CERTIFIED: "not certified", EXIT_BAD_INPUT: "bad input",
          EXIT_INTERNAL: "internal error"}


@dataclass
class Row:
    model: str
    code: int
    status: str
    upper: float | None = None
    label: str | None = None
    method: str | None = None
    lower: float | None = None
    gap: float | None = None
    seconds: float = 0.0
    message: str = ""          # the error line, or why the bound is not certified / above --fail-above
    report: str | None = None  # the rendered report, when asked for

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "report"}


def collect(specs: list[str]) -> list[Path]:
    """Files as given, folders expanded to the ``.onnx`` files below them (sorted)."""
    paths: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(p.rglob("*.onnx"))
            if not found:
                raise InputError(f"{spec}: folder holds no .onnx file")
            paths += found
        else:
            paths.append(p)   # a missing file is that model's bad-input row
    return paths


def run_one(path: str, options: Options, fmt: str | None = None, fail_above: float | None = None) -> Row:
    """Analyse one model; every outcome is a row (nothing raises)."""
    t0 = time.perf_counter()
    try:
        from lipgraph.pipeline import analyze
        from lipgraph.report import FORMATS
        analysis = analyze(path, options)
        report = FORMATS[fmt](analysis, path) if fmt else None
        up, lower = analysis.upper, analysis.lower
        row = Row(path, EXIT_OK, "", up.value if up else None, up.label.value if up else None,
                  up.name if up else None, lower.value if lower else None,
                  up.value / lower.value if up and lower and lower.value > 0 else None, report=report)
        if analysis.inconsistent:
            row.code, row.message = EXIT_INTERNAL, "a realised lower bound exceeds a certified upper bound"
        elif up is None:
            row.code, row.message = EXIT_NOT_CERTIFIED, "no finite certified upper bound"
        elif fail_above is not None and up.value > fail_above:
            row.code, row.message = EXIT_NOT_CERTIFIED, f"above --fail-above {fail_above:g}"
    except InputError as exc:
        row = Row(path, EXIT_BAD_INPUT, "", message=str(exc))
    except Exception as exc:  # noqa: BLE001 - one model's bug is its row, not the audit's end
        row = Row(path, EXIT_INTERNAL, "", message=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    row.status = STATUS[row.code]
    row.seconds = time.perf_counter() - t0
    return row


def run_batch(paths: list[Path], options: Options, jobs: int = 1, ray_address: str | None = None,
              fmt: str | None = None, fail_above: float | None = None, progress=lambda s: None) -> list[Row]:
    """One row per model, in the order given."""
    args = [(str(p), options, fmt, fail_above) for p in paths]
    if ray_address is not None:
        return _on_ray(args, ray_address, progress)
    if jobs <= 1:
        rows = []
        for k, a in enumerate(args):
            progress(f"model {k + 1}/{len(args)}: {a[0]}")
            rows.append(run_one(*a))
        return rows
    rows: list[Row | None] = [None] * len(args)
    # forkserver: workers fork from a clean server that imported lipgraph once (a plain fork of
    # this process would copy torch's and onnxruntime's thread pools in an unknown state)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["lipgraph.pipeline", "lipgraph.report"])
    with futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        pending = {pool.submit(run_one, *a): k for k, a in enumerate(args)}
        for done, fut in enumerate(futures.as_completed(pending), 1):
            k = pending[fut]
            try:
                rows[k] = fut.result()
            except Exception as exc:  # noqa: BLE001 - the worker died (killed, out of memory)
                rows[k] = Row(args[k][0], EXIT_INTERNAL, STATUS[EXIT_INTERNAL],
                              message=f"worker failed: {type(exc).__name__}: {exc}")
            progress(f"{done}/{len(args)} models done")
    return rows


def _on_ray(args: list[tuple], address: str, progress) -> list[Row]:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs ray: pip install 'lipgraph[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - no cluster there
            raise InputError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0]})") from None
    task = ray.remote(run_one)
    refs = [task.remote(*a) for a in args]
    rows = []
    for k, (ref, a) in enumerate(zip(refs, args)):
        try:
            rows.append(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - the task or its worker failed
            rows.append(Row(a[0], EXIT_INTERNAL, STATUS[EXIT_INTERNAL], message=f"ray task failed: {exc}"))
        progress(f"{k + 1}/{len(args)} models done")
    return rows


def table(rows: list[Row]) -> str:
    """The summary: one line per model, then the count per status."""
    def num(v):
        return f"{v:.6g}" if v is not None else "—"
    header = ("model", "upper", "label", "lower", "gap", "seconds", "status")
    lines = [(r.model, num(r.upper), r.label or "—", num(r.lower), num(r.gap), f"{r.seconds:.2f}",
              r.status + (f": {r.message}" if r.message else "")) for r in rows]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(6)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6] for row in [header, *lines]]
    counts = {s: sum(r.status == s for r in rows) for s in STATUS.values()}
    out.append(f"{len(rows)} models: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(out) + "\n"
