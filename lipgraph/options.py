"""What a user can ask of an analysis: the options of every stage, with their defaults (the
command line reads its defaults from here)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Every method an analysis can produce, in the order the passes produce them.
ALL_METHODS = ("autolip", "autolip-power", "seqlip", "seqlip-greedy", "lipsdp", "lower")
DEFAULT_METHODS = ALL_METHODS


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """``methods`` if every one is known, else an ``InputError`` naming the unknown ones."""
    from lipgraph.errors import InputError
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise InputError(f"--methods: unknown method(s) {', '.join(unknown)}; choose from {', '.join(ALL_METHODS)}")
    return methods


@dataclass
class NormOptions:
    materialize_limit: int = 1 << 24   # largest affine segment (matrix entries) certified by materialising it
    power_tol: float = 1e-6            # relative tolerance of the norm estimates (Lanczos on AᵀA)
    power_iters: int = 500             # cap on AᵀA products per segment
    agree_tol: float = 1e-3            # the estimate stops once within this of the segment's certificate


@dataclass
class SeqLipOptions:
    exact_max: int = 24            # widest layer enumerated (capped at ENUM_MAX=18; branch and bound beyond, to 64)
    topk: int = 200                # singular triplets kept for layers whose SVD cannot be formed
    budget: float = 30.0           # seconds for all exact enumerations; past it, certified relaxation
    dense_limit: int = 2048        # widest segment materialised for its SVD (larger: top-k)
    bnb_nodes: int = 2048          # branch-and-bound node evaluations per neuron (deterministic, not seconds)
    greedy_max: int = 1 << 18      # n·p·q up to which greedy is the paper's; above: alternating ascent


@dataclass
class LipSDPOptions:
    variant: str = "neuron"        # "neuron" (a multiplier per neuron) or "layer" (one per layer)
    route: str = "first-order"     # "first-order" (solver-free, torch) or "sdp" (cvxpy + Clarabel, extra [sdp])
    max_neurons: int = 1024        # chains with more hidden neurons are skipped, with a note
    max_iter: int = 500            # quasi-Newton steps of the first-order route


@dataclass
class LowerOptions:
    budget: float = 5.0            # seconds of search
    search: str = "auto"
    data: str | None = None        # .npy file of inputs to start from
    restarts: int | None = None    # exactly this many search rounds (reproducible), else the budget


@dataclass(frozen=True)
class Domain:
    """The inputs a bound is about: a box ``lo ≤ x ≤ hi`` (scalars, or arrays of the analysed
    input's shape). ``--around X --radius R`` is the ℓ∞ ball ``[X − R, X + R]``, which contains
    the ℓ2 ball of radius R around X (‖d‖∞ ≤ ‖d‖₂), so a bound on the box holds on that ball.
    ``None`` in ``Options.domain`` means all of R^n."""

    lo: object                      # float or np.ndarray
    hi: object
    spec: str                       # how the user gave it, for messages

    def bounds(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) as float64 arrays of ``shape``; InputError when they do not fit it."""
        from lipgraph.errors import InputError
        shape = tuple(shape)
        out = []
        for end in (self.lo, self.hi):
            arr = np.asarray(end, dtype=np.float64)
            if arr.ndim and arr.shape != shape and not (arr.shape == shape[1:] and shape[:1] == (1,)):
                raise InputError(f"{self.spec}: box shape {list(arr.shape)} does not match the analysed input "
                                 f"{list(shape)}")
            out.append(np.broadcast_to(arr.reshape(shape) if arr.ndim else arr, shape).copy())
        return out[0], out[1]

    @property
    def name(self) -> str:
        return box_name(self.lo, self.hi)

    def checked(self) -> "Domain":
        """``self``; InputError for NaN or ±inf ends, lo > hi anywhere, or no width at all."""
        from lipgraph.errors import InputError
        lo, hi = np.broadcast_arrays(np.asarray(self.lo, np.float64), np.asarray(self.hi, np.float64))
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise InputError(f"{self.spec}: the box ends must be finite numbers (NaN or ±inf found)")
        if (lo > hi).any():
            k = int(np.argmax(lo > hi))
            raise InputError(f"{self.spec}: lo > hi at element {k} ({lo.ravel()[k]:g} > {hi.ravel()[k]:g})")
        if not (lo < hi).any():
            raise InputError(f"{self.spec}: the box is a single point (lo = hi everywhere)")
        return self


#: The name of the unrestricted domain in reports.
WHOLE_SPACE = "R^n"


def box_name(lo, hi) -> str:
    """``box [lo, hi]`` for a uniform box, else the ranges of both ends."""
    lo, hi = np.unique(np.asarray(lo)), np.unique(np.asarray(hi))
    if lo.size == 1 and hi.size == 1:
        return f"box [{lo[0]:g}, {hi[0]:g}]"
    return f"box [{lo.min():g}..{lo.max():g}, {hi.min():g}..{hi.max():g}]"


@dataclass
class Options:
    input: str | None = None
    output: str | None = None
    input_shapes: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)      # non-analysed input → VALUE, FILE.npy or an array (--fix)
    domain: Domain | None = None                   # every bound and the lower search on this box; None: R^n
    domain_also_global: bool = False               # with a domain: SeqLip's global value too (AutoLip's is always kept)
    methods: tuple[str, ...] = DEFAULT_METHODS
    device: str = "auto"
    seed: int = 0
    assume: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    norms: NormOptions = field(default_factory=NormOptions)
    seqlip: SeqLipOptions = field(default_factory=SeqLipOptions)
    lipsdp: LipSDPOptions = field(default_factory=LipSDPOptions)
    lower: LowerOptions = field(default_factory=LowerOptions)
    verbose: bool = False
    time_limit: float | None = None    # seconds for the whole analysis; past it the result is partial
    memory_limit: int | None = None    # bytes one allocation may take (None: budget.MEMORY_FRACTION of RAM)
