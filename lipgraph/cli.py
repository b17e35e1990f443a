"""The command line: ``lipgraph analyze``, ``lipgraph rules``, ``lipgraph rule OP``.

Exit codes: 0 — analysis done and the certified bound is finite (and ≤ --fail-above);
1 — done but not certified, or above the threshold; 2 — bad usage or bad input (one line
on stderr, nothing written); 3 — internal error (a bug: rerun with --traceback).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from lipgraph import __version__
from lipgraph.errors import InputError, SemanticMismatch

EXIT_OK, EXIT_NOT_CERTIFIED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


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
    a.add_argument("model", help="path to an .onnx file")
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
    a.add_argument("-v", "--verbose", action="store_true", help="per-segment certificates next to estimates")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress messages")

    sub.add_parser("rules", help="list every rule: op, domain, versions, kind, origin").add_argument(
        "--plugin", action="append", default=[], metavar="MODULE")
    sub.add_parser("codes", help="list every diagnostic code: severity and meaning")
    r = sub.add_parser("rule", help="print a rule's documentation")
    r.add_argument("op")
    r.add_argument("--plugin", action="append", default=[], metavar="MODULE")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "analyze":
            return cmd_analyze(args)
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
    from lipgraph.options import ALL_METHODS, LipSDPOptions, LowerOptions, NormOptions, Options, SeqLipOptions
    from lipgraph.pipeline import analyze
    from lipgraph.report import FORMATS
    from lipgraph.passes.annotate import parse_assumptions
    from lipgraph.ir.inputs import parse_fixes, parse_input_shapes
    from lipgraph.progress import Progress

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise InputError(f"--methods: unknown method(s) {', '.join(unknown)}; choose from {', '.join(ALL_METHODS)}")
    if args.lower_restarts is not None and args.lower_restarts < 1:
        raise InputError("--lower-restarts must be ≥ 1")
    if args.power_iters < 1 or args.power_tol <= 0 or args.materialize_limit < 0:
        raise InputError("--power-iters must be ≥ 1, --power-tol > 0 and --materialize-limit ≥ 0")
    options = Options(input=args.input, output=args.output, input_shapes=parse_input_shapes(args.input_shape),
                      fixed=parse_fixes(args.fix), domain=parse_domain(args.input_box, args.around, args.radius),
                      domain_also_global=args.domain_also_global,
                      methods=methods, device=args.device, seed=args.seed, assume=parse_assumptions(args.assume),
                      plugins=tuple(args.plugin),
                      norms=NormOptions(materialize_limit=args.materialize_limit, power_tol=args.power_tol,
                                        power_iters=args.power_iters, seed=args.seed),
                      lipsdp=LipSDPOptions(variant=args.lipsdp_variant, route=args.lipsdp_route,
                                           max_neurons=args.lipsdp_max_neurons),
                      seqlip=SeqLipOptions(exact_max=args.seqlip_exact_max, topk=args.seqlip_topk,
                                           budget=args.seqlip_budget, dense_limit=args.seqlip_dense_limit),
                      lower=LowerOptions(budget=args.lower_budget, search=args.lower_search, data=args.data,
                                         restarts=args.lower_restarts),
                      verbose=args.verbose)
    analysis = analyze(args.model, options, progress=Progress(enabled=not args.quiet))
    emit(FORMATS[args.format](analysis, args.model, verbose=args.verbose), args.out)
    if analysis.inconsistent:
        print("lipgraph: internal error: a realised lower bound exceeds a certified upper bound (see "
              "[lower-above-upper]); one of them is wrong (a bug in lipgraph: please report it with the model)",
              file=sys.stderr)
        return EXIT_INTERNAL
    up = analysis.upper
    if up is None:
        return EXIT_NOT_CERTIFIED
    if args.fail_above is not None and up.value > args.fail_above:
        print(f"lipgraph: certified bound {up.value:.6g} is above --fail-above {args.fail_above:g}", file=sys.stderr)
        return EXIT_NOT_CERTIFIED
    return EXIT_OK


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
        return _checked(Domain(x - radius, x + radius, f"--around {around} --radius {radius:g}"))
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
        return _checked(Domain(np.asarray(lo, np.float64), np.asarray(hi, np.float64), f"--input-box {box}"))
    try:
        lo, hi = (float(v) for v in box.split(","))
    except ValueError:
        raise InputError(f"--input-box '{box}': expected LO,HI (two numbers) or FILE.npz") from None
    return _checked(Domain(lo, hi, f"--input-box {box}"))


def _read_array(path: str, flag: str, reader):
    try:
        return reader(path) if reader is not np.load else np.asarray(np.load(path, allow_pickle=False), np.float64)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing, unreadable, pickled, not numeric
        raise InputError(f"{flag} {path}: cannot read it ({str(exc).splitlines()[0][:120] or type(exc).__name__})") from None


def _checked(domain):
    """NaN or ±inf ends, lo > hi anywhere, or no width at all: InputError."""
    lo, hi = np.asarray(domain.lo, np.float64), np.asarray(domain.hi, np.float64)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise InputError(f"{domain.spec}: the box ends must be finite numbers (NaN or ±inf found)")
    if (lo > hi).any():
        k = int(np.argmax(np.broadcast_to(lo > hi, np.broadcast(lo, hi).shape)))
        raise InputError(f"{domain.spec}: lo > hi at element {k} ({np.ravel(np.broadcast_to(lo, np.broadcast(lo, hi).shape))[k]:g} > "
                         f"{np.ravel(np.broadcast_to(hi, np.broadcast(lo, hi).shape))[k]:g})")
    if not (lo < hi).any():
        raise InputError(f"{domain.spec}: the box is a single point (lo = hi everywhere)")
    return domain


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
