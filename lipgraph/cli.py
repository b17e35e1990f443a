"""The command line: ``lipgraph analyze``, ``lipgraph certify``, ``lipgraph rules``, ``lipgraph codes``,
``lipgraph rule OP``.

Exit codes: 0 — analysis done and the certified bound is finite (and ≤ --fail-above);
1 — done but not certified, or above the threshold; 2 — bad usage or bad input (one line
on stderr, nothing written); 3 — internal error (a bug: rerun with --traceback); 4 — partial:
``--time-limit`` fired, the report lists the methods that finished and those that did not.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from lipgraph.errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_NOT_CERTIFIED, EXIT_OK, EXIT_PARTIAL, InputError,
                             SemanticMismatch)
from lipgraph.version import __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"lipgraph: error: {message} (see lipgraph {self.prog.split()[-1]} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from lipgraph.options import (ALL_METHODS, DEFAULT_METHODS, LipSDPOptions, LowerOptions, NormOptions,
                                  SeqLipOptions)
    from lipgraph.report import FORMATS
    norms, seq, low, sdp = NormOptions(), SeqLipOptions(), LowerOptions(), LipSDPOptions()

    p = _Parser(prog="lipgraph", description="Certified Lipschitz bounds for ONNX models.")
    p.add_argument("--version", action="version", version=f"lipgraph {__version__}")
    p.add_argument("--traceback", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    a = sub.add_parser("analyze", help="bound the Lipschitz constant of a model")
    a.add_argument("model", nargs="+", help="an .onnx file; several files or folders audit them all (a summary table)")
    a.add_argument("--input", help="analysed input (default: the first graph input)")
    a.add_argument("--fix", action="append", metavar="NAME=VALUE|FILE.npy",
                   help="hold a non-analysed input at a value (float inputs default to zeros; integer and "
                        "bool inputs must be given)")
    a.add_argument("--output", help="analysed output (default: the first graph output)")
    a.add_argument("--input-shape", action="append", metavar="NAME:d1,d2,…", help="pin dynamic dims")
    a.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from: {', '.join(ALL_METHODS)} (default: %(default)s)")
    a.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where power iteration runs (auto: cuda when available)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--format", choices=sorted(FORMATS), default="text")
    a.add_argument("-o", "--out", metavar="FILE", help="write the report to FILE (written only when complete)")
    a.add_argument("--fail-above", type=float, metavar="L", help="exit 1 if the certified bound exceeds L")
    a.add_argument("--assume", action="append", metavar="OP=L", help="vouch for an op's Lipschitz constant")
    a.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import a module of user rules")
    a.add_argument("--power-tol", type=float, default=norms.power_tol, help="norm estimates (Lanczos on AᵀA): relative tolerance (default %(default)s)")
    a.add_argument("--power-iters", type=int, default=norms.power_iters, help="norm estimates: cap on AᵀA products per segment (default %(default)s)")
    a.add_argument("--materialize-limit", type=int, default=norms.materialize_limit,
                   help="materialise affine segments with at most this many matrix entries (certified SVD)")
    a.add_argument("--seqlip-exact-max", type=int, default=seq.exact_max, metavar="N",
                   help="SeqLip: enumerate activation layers up to N neurons exactly (default %(default)s)")
    a.add_argument("--seqlip-topk", type=int, default=seq.topk, metavar="K",
                   help="SeqLip: singular triplets kept for layers too large for an SVD (default %(default)s)")
    a.add_argument("--seqlip-budget", type=float, default=seq.budget, metavar="SECONDS",
                   help="SeqLip: time for exact enumerations; past it, the certified relaxation (default %(default)s)")
    a.add_argument("--lipsdp-variant", choices=["neuron", "layer"], default=sdp.variant,
                   help="LipSDP multipliers: one per neuron or one per layer (default %(default)s)")
    a.add_argument("--lipsdp-route", choices=["first-order", "sdp"], default=sdp.route,
                   help="LipSDP solver: solver-free first-order, or cvxpy + Clarabel (pip install 'lipgraph[sdp]') "
                        "(default %(default)s)")
    a.add_argument("--lipsdp-max-neurons", type=int, default=sdp.max_neurons, metavar="N",
                   help="LipSDP: skip chains with more hidden neurons (default %(default)s)")
    a.add_argument("--seqlip-dense-limit", type=int, default=seq.dense_limit, metavar="N",
                   help="SeqLip: widest segment materialised for its SVD; wider uses top-k (default %(default)s)")
    a.add_argument("--lower-budget", type=float, default=low.budget, metavar="SECONDS",
                   help="seconds of lower-bound search (default %(default)s)")
    a.add_argument("--lower-search", default=low.search, choices=["auto", "smooth", "ratio", "jacobian", "anneal", "sample"],
                   help="lower-bound search strategy (default %(default)s)")
    a.add_argument("--lower-restarts", type=int, metavar="N",
                   help="exactly N lower-bound search rounds (reproducible run to run), instead of the budget")
    a.add_argument("--input-box", metavar="LO,HI|FILE.npz",
                   help="analyse the inputs in a box: every bound and the lower-bound search hold on it "
                        "(LO,HI scalars, or an .npz with per-element arrays 'lo' and 'hi')")
    a.add_argument("--around", metavar="FILE.npy", help="analyse the box [X − R, X + R] around the point in FILE.npy "
                   "(with --radius R; it contains the ℓ2 ball of radius R)")
    a.add_argument("--radius", type=float, metavar="R", help="half-width of the --around box")
    a.add_argument("--domain-also-global", action="store_true",
                   help="with a box: compute SeqLip's global (R^n) value as well (AutoLip's is always in the JSON)")
    a.add_argument("--data", metavar="FILE.npy", help="inputs to start the lower-bound search from")
    a.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop the whole analysis after SECONDS: finished methods are reported, exit code 4")
    a.add_argument("--memory-limit", type=_memory, metavar="SIZE",
                   help="largest single allocation (e.g. 512M, 4G; default: half the physical memory); larger "
                        "steps take a cheaper route or are skipped, with a note")
    a.add_argument("-v", "--verbose", action="store_true", help="per-segment certificates next to estimates")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    a.add_argument("--jobs", type=int, default=1, metavar="N", help="many models: N worker processes (default 1)")
    a.add_argument("--ray", metavar="ADDRESS", help="many models: run them on this Ray cluster (pip install "
                                                    "'lipgraph[ray]')")
    a.add_argument("--reports", metavar="DIR", help="many models: write each model's report (in --format) to DIR")

    c = sub.add_parser("certify", help="certified ℓ2 robustness of a classifier on a data set")
    c.add_argument("model", help="path to an .onnx file (a classifier: the output holds the logits)")
    c.add_argument("--data", required=True, metavar="X.npy", help="inputs, stacked along the first axis")
    c.add_argument("--labels", required=True, metavar="y.npy", help="their class indices (1-D integers)")
    c.add_argument("--eps", metavar="E1,E2,…", help="radii of the accuracy table (default: 5 up to the largest "
                                                     "certified radius)")
    c.add_argument("--attack", action="store_true", help="also run an ℓ2 PGD attack at each eps (fixed seed)")
    c.add_argument("--methods", default="autolip,seqlip",
                   help="methods bounding the model and each margin (default: %(default)s)")
    for flag, kw in (("--input", {}), ("--output", {}), ("--input-shape", {"action": "append"}),
                     ("--fix", {"action": "append"}), ("--input-box", {"metavar": "LO,HI|FILE.npz"})):
        c.add_argument(flag, **kw)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.add_argument("-o", "--out", metavar="FILE", help="write the report to FILE (written only when complete)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress messages")

    sub.add_parser("rules", help="list every rule: op, domain, versions, kind, origin").add_argument(
        "--plugin", action="append", default=[], metavar="MODULE")
    sub.add_parser("codes", help="list every diagnostic code: severity and meaning")
    r = sub.add_parser("rule", help="print a rule's documentation")
    r.add_argument("op")
    r.add_argument("--plugin", action="append", default=[], metavar="MODULE")
    return p


def _memory(spec: str) -> int:
    """``--memory-limit``: bytes, or a number with K/M/G/T (binary multiples)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = spec.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{spec}' is not a size (e.g. 512M, 4G)") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"'{spec}' must be at least 1 byte")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "analyze":
            return cmd_analyze(args)
        if args.command == "certify":
            return cmd_certify(args)
        if args.command == "rules":
            return cmd_rules(args)
        if args.command == "codes":
            from lipgraph.diagnostics import table_text
            print(table_text())
            return EXIT_OK
        return cmd_rule(args)
    except InputError as exc:
        if args.traceback:
            raise
        print(f"lipgraph: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SemanticMismatch as exc:
        if args.traceback:
            raise
        print(f"lipgraph: internal error: lipgraph's reading of the model disagrees with onnxruntime at {exc}; "
              "nothing is certified (a bug in lipgraph: please report it with the model)", file=sys.stderr)
        return EXIT_INTERNAL
    except BrokenPipeError:
        return _quiet_closed_pipe()
    except KeyboardInterrupt:
        print("lipgraph: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: no tracebacks for users
        if args.traceback:
            raise
        print(f"lipgraph: internal error: {type(exc).__name__}: {exc} (rerun with --traceback and report it)",
              file=sys.stderr)
        return EXIT_INTERNAL


def cmd_analyze(args) -> int:
    from lipgraph.options import LipSDPOptions, LowerOptions, NormOptions, Options, SeqLipOptions, check_methods
    from lipgraph.pipeline import analyze
    from lipgraph.report import FORMATS
    from lipgraph.passes.annotate import parse_assumptions
    from lipgraph.ir.inputs import parse_fixes, parse_input_shapes
    from lipgraph.progress import Progress

    methods = check_methods(tuple(m.strip() for m in args.methods.split(",") if m.strip()))
    if args.lower_restarts is not None and args.lower_restarts < 1:
        raise InputError("--lower-restarts must be ≥ 1")
    if args.time_limit is not None and not args.time_limit > 0:
        raise InputError("--time-limit must be > 0 seconds")
    if args.power_iters < 1 or args.power_tol <= 0 or args.materialize_limit < 0:
        raise InputError("--power-iters must be ≥ 1, --power-tol > 0 and --materialize-limit ≥ 0")
    options = Options(input=args.input, output=args.output, input_shapes=parse_input_shapes(args.input_shape),
                      fixed=parse_fixes(args.fix), domain=parse_domain(args.input_box, args.around, args.radius),
                      domain_also_global=args.domain_also_global,
                      methods=methods, device=args.device, seed=args.seed, assume=parse_assumptions(args.assume),
                      plugins=tuple(args.plugin),
                      norms=NormOptions(materialize_limit=args.materialize_limit, power_tol=args.power_tol,
                                        power_iters=args.power_iters),
                      lipsdp=LipSDPOptions(variant=args.lipsdp_variant, route=args.lipsdp_route,
                                           max_neurons=args.lipsdp_max_neurons),
                      seqlip=SeqLipOptions(exact_max=args.seqlip_exact_max, topk=args.seqlip_topk,
                                           budget=args.seqlip_budget, dense_limit=args.seqlip_dense_limit),
                      lower=LowerOptions(budget=args.lower_budget, search=args.lower_search, data=args.data,
                                         restarts=args.lower_restarts),
                      verbose=args.verbose, time_limit=args.time_limit, memory_limit=args.memory_limit)
    if len(args.model) > 1 or Path(args.model[0]).is_dir() or args.ray or args.reports:
        return _analyze_many(args, options)
    model = args.model[0]
    analysis = analyze(model, options, progress=Progress(enabled=not args.quiet))
    emit(FORMATS[args.format](analysis, model, verbose=args.verbose), args.out)
    if analysis.inconsistent:
        print("lipgraph: internal error: a realised lower bound exceeds a certified upper bound (see "
              "[lower-above-upper]); one of them is wrong (a bug in lipgraph: please report it with the model)",
              file=sys.stderr)
        return EXIT_INTERNAL
    if analysis.partial:
        print(f"lipgraph: partial result: --time-limit {args.time_limit:g}s reached before "
              f"{', '.join(analysis.unfinished)} finished", file=sys.stderr)
        return EXIT_PARTIAL
    up = analysis.upper
    if up is None:
        return EXIT_NOT_CERTIFIED
    if args.fail_above is not None and up.value > args.fail_above:
        print(f"lipgraph: certified bound {up.value:.6g} is above --fail-above {args.fail_above:g}", file=sys.stderr)
        return EXIT_NOT_CERTIFIED
    return EXIT_OK


def _analyze_many(args, options) -> int:
    """``analyze`` of several models: a summary table (or JSON), per-model reports on request."""
    from lipgraph.batch import collect, run_batch, table, worst
    from lipgraph.progress import Progress
    from lipgraph.report.document import dumps

    if args.jobs < 1:
        raise InputError("--jobs must be ≥ 1")
    reports = Path(args.reports) if args.reports else None
    if reports is not None and not reports.is_dir():
        raise InputError(f"--reports {args.reports}: no such folder")
    rows = run_batch(collect(args.model), options, jobs=args.jobs, ray_address=args.ray,
                     fmt=args.format if reports else None, fail_above=args.fail_above,
                     progress=Progress(enabled=not args.quiet))
    if reports is not None:
        suffix = {"text": ".txt", "json": ".json", "html": ".html"}[args.format]
        for k, row in enumerate(rows):
            if row.report is not None:
                emit(row.report, str(reports / f"{k:03d}-{Path(row.model).stem}{suffix}"))
    emit(dumps({"models": [r.to_json() for r in rows]}) + "\n" if args.format == "json" else table(rows), args.out)
    return worst(r.code for r in rows)


def cmd_certify(args) -> int:
    from lipgraph.ir.inputs import parse_fixes, parse_input_shapes
    from lipgraph.options import Options, check_methods
    from lipgraph.progress import Progress
    from lipgraph.report.certify_text import render
    from lipgraph.report.document import dumps
    from lipgraph.robust import certify

    eps = None
    if args.eps:
        try:
            eps = [float(e) for e in args.eps.split(",")]
        except ValueError:
            raise InputError(f"--eps '{args.eps}': expected comma-separated numbers") from None
        if any(not e >= 0 for e in eps):
            raise InputError(f"--eps '{args.eps}': radii must be ≥ 0")
    options = Options(input=args.input, output=args.output, input_shapes=parse_input_shapes(args.input_shape),
                      fixed=parse_fixes(args.fix), seed=args.seed,
                      methods=check_methods(tuple(m.strip() for m in args.methods.split(",") if m.strip())),
                      domain=parse_domain(args.input_box, None, None))
    doc = certify(args.model, args.data, args.labels, options, eps=eps, attack=args.attack,
                  progress=Progress(enabled=not args.quiet))
    emit(dumps(doc) + "\n" if args.format == "json" else render(doc), args.out)
    return EXIT_OK if doc["model_bound"] is not None else EXIT_NOT_CERTIFIED


def parse_domain(box: str | None, around: str | None, radius: float | None):
    """``--input-box LO,HI | FILE.npz`` or ``--around FILE.npy --radius R`` → a ``Domain`` (None: R^n).
    Bad input (lo > hi, NaN, a missing file or key, both forms at once): InputError."""
    from lipgraph.options import Domain
    if box is not None and (around is not None or radius is not None):
        raise InputError("--input-box and --around/--radius are two ways to give the domain: use one")
    if (around is None) != (radius is None):
        raise InputError("--around FILE.npy and --radius R go together")
    if around is not None:
        x = _read_array(around, "--around", np.load)
        if not (math.isfinite(radius) and radius > 0):
            raise InputError(f"--radius {radius:g}: must be a positive finite number")
        return Domain(x - radius, x + radius, f"--around {around} --radius {radius:g}").checked()
    if box is None:
        return None
    if box.endswith(".npz"):
        def load(path):
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("lo", "hi") if k not in z.files]
                if missing:
                    raise InputError(f"--input-box {path}: no array named {' or '.join(repr(k) for k in missing)} "
                                     f"(it holds {', '.join(z.files) or 'nothing'}); expected 'lo' and 'hi'")
                return z["lo"], z["hi"]
        lo, hi = _read_array(box, "--input-box", load)
        if np.shape(lo) != np.shape(hi):
            raise InputError(f"--input-box {box}: 'lo' {list(np.shape(lo))} and 'hi' {list(np.shape(hi))} differ in shape")
        return Domain(np.asarray(lo, np.float64), np.asarray(hi, np.float64), f"--input-box {box}").checked()
    try:
        lo, hi = (float(v) for v in box.split(","))
    except ValueError:
        raise InputError(f"--input-box '{box}': expected LO,HI (two numbers) or FILE.npz") from None
    return Domain(lo, hi, f"--input-box {box}").checked()


def _read_array(path: str, flag: str, reader):
    try:
        return reader(path) if reader is not np.load else np.asarray(np.load(path, allow_pickle=False), np.float64)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing, unreadable, pickled, not numeric
        raise InputError(f"{flag} {path}: cannot read it ({str(exc).splitlines()[0][:120] or type(exc).__name__})") from None



def emit(text: str, out: str | None) -> None:
    """Print, or write FILE atomically (a temporary file renamed into place)."""
    if out is None:
        sys.stdout.write(text)
        return
    target = Path(out)
    if not target.parent.exists():
        raise InputError(f"-o {out}: folder {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp's 0600 is for the temporary file, not the report
    os.replace(tmp, target)


def cmd_rules(args) -> int:
    from lipgraph.registry import REGISTRY, load_plugins
    load_plugins(args.plugin)
    grouped: dict[tuple, list[int]] = {}
    for key, r in REGISTRY.rules():
        grouped.setdefault((key.domain or "ai.onnx", key.op_type, r.kind.value, r.origin), []).append(key.version)
    rows = [(op, dom, ",".join(map(str, vs)), kind, origin) for (dom, op, kind, origin), vs in grouped.items()]
    rows.sort(key=lambda r: (r[1], r[0].lower()))
    header = ("op", "domain", "versions", "kind", "origin")
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_rule(args) -> int:
    from lipgraph.registry import REGISTRY, load_plugins
    load_plugins(args.plugin)
    found = REGISTRY.find(args.op)
    if not found:
        raise InputError(f"no rule for '{args.op}' (see `lipgraph rules`)")
    for r in found:
        print(f"{r.op_type} ({r.domain or 'ai.onnx'}, versions {', '.join(map(str, r.versions))}, "
              f"kind {r.kind.value}, origin {r.origin})\n")
        print(r.doc + "\n")
    return EXIT_OK


def _quiet_closed_pipe() -> int:
    """The reader of stdout went away (``lipgraph rules | head``): stop quietly, exit 0. Later
    flushes of stdout (at interpreter exit) go to /dev/null instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def console_entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        code = _quiet_closed_pipe()
    sys.exit(code)
