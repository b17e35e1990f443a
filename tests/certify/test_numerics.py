"""Numerics that cannot escape (issue 15 item 2): huge finite weights give a finite-or-∞ bound,
never an exception; zero layers and subnormal weights give exact results. Each value is checked
against an independent computation (numpy's SVD of the unscaled matrix, times the scale)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipgraph.certify.dense import OVERFLOW, certified_materialised_norm, matrix_norm, power_iteration
from lipgraph.certify.lipsdp import lipsdp
from lipgraph.certify.margins import pow2_normalise
from lipgraph.certify.seqlip_chain import seqlip_chain
from lipgraph.labels import Label

RNG = np.random.default_rng(15)
A = RNG.standard_normal((7, 5))


@pytest.mark.parametrize("exponent", [-1070, -1000, -300, 0, 300, 600, 1000])
def test_matrix_norm_is_exact_under_power_of_two_scaling(exponent):
    """2^e·A: the Gram matrix of 2^600·A overflows and that of 2^-1000·A underflows to
    subnormals; the norm is 2^e·‖A‖ all the same (‖A‖ from numpy's SVD)."""
    scaled = np.ldexp(A, exponent)
    want = np.linalg.norm(A, 2)
    got = matrix_norm(scaled)
    if exponent <= -1070:   # entries are themselves subnormal: precision is lost in the input, not by us
        assert got == pytest.approx(np.linalg.norm(scaled / 2.0**-1070, 2) * 2.0**-1070, rel=1e-12)
    else:
        assert np.ldexp(got, -exponent) == pytest.approx(want, rel=1e-12)


def test_matrix_norm_of_a_zero_or_non_finite_matrix():
    assert matrix_norm(np.zeros((3, 4))) == 0.0
    bad = A.copy()
    bad[0, 0] = np.inf
    assert matrix_norm(bad) == math.inf


def test_pow2_normalise():
    for x in (np.ldexp(A, 700), np.ldexp(A, -1040), torch.as_tensor(np.ldexp(A, 90))):
        y, s = pow2_normalise(x)
        assert 0.5 <= float(abs(y).max()) < 1 and math.log2(s).is_integer()
        assert np.array_equal(np.asarray(y) * s, np.asarray(x))
    assert pow2_normalise(np.zeros(3))[1] == 0.0 and pow2_normalise(np.array([1.0, np.nan]))[1] == math.inf


def test_materialised_operator_that_overflows_is_infinite_not_an_error():
    w = torch.as_tensor(np.full((3, 3), 1e300))
    bound = certified_materialised_norm(lambda x: (x @ w.T) @ w.T, (1, 3), 3, limit=100)
    assert bound.value == math.inf and bound.method == OVERFLOW
    exact = certified_materialised_norm(lambda x: x @ torch.as_tensor(np.ldexp(A, 900)).T, (1, 5), 7, limit=100)
    assert np.ldexp(exact.value, -900) == pytest.approx(np.linalg.norm(A, 2), rel=1e-6)
    assert np.ldexp(exact.value, -900) >= np.linalg.norm(A, 2)


def test_power_iteration_that_overflows_float32_is_infinite():
    w = torch.full((4, 4), 3e38)
    res = power_iteration(lambda x: x @ w.T @ w.T, (1, 4))
    assert res.sigma == math.inf and not res.converged


def _two_layer(n=6):
    rng = np.random.default_rng(3)
    return [rng.standard_normal((n, 4)), rng.standard_normal((3, n))]


@pytest.mark.parametrize("e1, e2", [(0, 0), (500, 400), (-900, 30), (-600, -500)])
def test_lipsdp_is_homogeneous_in_each_layer(e1, e2):
    """LipSDP of (2^e1 W1, 2^e2 W2) is 2^(e1+e2) times that of (W1, W2) — also where ρ = L² or
    the multipliers would overflow or underflow float64 without the scaling."""
    w1, w2 = _two_layer()
    base = lipsdp([w1, w2])
    res = lipsdp([np.ldexp(w1, e1), np.ldexp(w2, e2)])
    assert res.bound.label is Label.CERTIFIED
    if e1 + e2 < -1074:   # below float64's range: the smallest positive number, never 0
        assert res.bound.value == np.nextafter(0.0, 1.0)
    else:
        assert np.ldexp(res.bound.value, -(e1 + e2)) == pytest.approx(base.bound.value, rel=1e-9)


def test_lipsdp_zero_layer_is_exactly_zero_and_non_finite_is_infinite():
    w1, w2 = _two_layer()
    zero = lipsdp([w1, 0 * w2])
    assert zero.bound.value == 0.0 and zero.bound.label is Label.EXACT
    inf = lipsdp([w1 * np.inf, w2])
    assert inf.bound.value == math.inf


@pytest.mark.parametrize("e1, e2", [(0, 0), (450, 450), (-1000, 20)])
def test_seqlip_is_homogeneous_in_each_layer(e1, e2):
    w1, w2 = _two_layer()
    base = seqlip_chain([w1, w2], [(0.0, 1.0)])
    res = seqlip_chain([np.ldexp(w1, e1), np.ldexp(w2, e2)], [(0.0, 1.0)])
    # near 1e-294 the certification's absolute 1e-300 is a relative 1e-6
    assert np.ldexp(res.certified.value, -(e1 + e2)) == pytest.approx(base.certified.value, rel=1e-5)
    assert np.ldexp(res.certified.value, -(e1 + e2)) >= base.certified.value * (1 - 1e-12)
    assert np.ldexp(res.greedy.value, -(e1 + e2)) == pytest.approx(base.greedy.value, rel=1e-9)


def test_seqlip_zero_layer_and_non_finite_map():
    w1, w2 = _two_layer()
    assert seqlip_chain([0 * w1, w2], [(0.0, 1.0)]).certified.value == 0.0
    res = seqlip_chain([w1, np.full_like(w2, np.inf)], [(0.0, 1.0)])
    assert res.certified.value == math.inf and any(d.code == "overflow" for d in res.diagnostics)
