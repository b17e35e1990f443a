"""Trust labels carried by every number lipgraph prints.

``exact``     tight: the value *is* the constant (ReLU's 1, a permutation's 1).
``certified`` a proven upper bound, floating-point error included (see ``certify``).
``assumed``   supplied by the user (``--assume Op=L``); sound only if the user is right.
``estimate``  no guarantee either way (power iteration, greedy/top-k SeqLip, sampling).
``lower``     a *lower* bound realised by an actual pair of inputs (the ``lower`` method):
              never an upper bound, never composed with the others.

A composite takes the weakest label of its parts (``weakest``).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Label(str, enum.Enum):
    EXACT = "exact"
    CERTIFIED = "certified"
    ASSUMED = "assumed"
    ESTIMATE = "estimate"
    LOWER = "lower"

    @property
    def strength(self) -> int:
        return _STRENGTH[self]

    @property
    def is_bound(self) -> bool:
        """True for labels that may become the headline upper bound."""
        return self in (Label.EXACT, Label.CERTIFIED, Label.ASSUMED)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


_STRENGTH = {Label.EXACT: 3, Label.CERTIFIED: 2, Label.ASSUMED: 1, Label.ESTIMATE: 0, Label.LOWER: -1}


def weakest(*labels: Label) -> Label:
    """The weakest of ``labels`` (``exact`` when given none)."""
    return min(labels, key=lambda l: l.strength, default=Label.EXACT)


#: Relative margin added to every certified value computed in float64 (SVD, eigenvalues,
#: materialised operators). Float64 rounding in these computations is below n·u ≈ 1e-11 for
#: the sizes lipgraph materialises; 1e-8 leaves three orders of magnitude of headroom.
CERT_MARGIN = 1e-8


def certify(value: float, margin: float = CERT_MARGIN) -> float:
    """Round a float64-computed upper bound up by the certification margin."""
    if not math.isfinite(value):
        return value
    return float(value) * (1.0 + margin) + 1e-300


#: Relative slack of a norm proven by a Cholesky proof ladder that stops at θ(1 + 10⁻²) above
#: an estimate θ ≤ the true norm (``linear.matrix_norm``): such a value is within 1 % of exact.
LADDER_SLACK = 1e-2


@dataclass(frozen=True)
class Bound:
    """A Lipschitz (or norm) bound with its label, the method that produced it, and how tight
    it is: ``slack`` s means value ≤ (1 + s)·(the true constant); None when unknown (e.g. the
    DFT bound of a convolution on a small map). ``exact`` bounds have slack 0."""

    value: float
    label: Label
    method: str
    slack: float | None = None

    @property
    def tightness(self) -> float | None:
        """The known relative slack (0 for an exact value), or None."""
        return 0.0 if self.label is Label.EXACT else self.slack

    def times(self, other: "Bound", method: str | None = None) -> "Bound":
        return Bound(self.value * other.value, weakest(self.label, other.label), method or self.method)


