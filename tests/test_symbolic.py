"""The sympy derivations of Proposition 1."""

import sympy as sp

from npe_theory import debruijn_coefficients, symbolic


def test_every_derivation_step_holds():
    from npe_theory.losses import loss_names

    report = symbolic.derivation_report(6)
    steps = [step for step, _, _ in report]
    assert all(f"J'' > 0 ({name})" in steps for name in loss_names())  # every registered loss is checked
    assert any(step.startswith("squared_hinge: J'(eta*) = 0") for step in steps)  # its closed form too
    assert len(report) >= len(loss_names()) + 5
    assert all(ok for _, ok, _ in report), [step for step, ok, _ in report if not ok]


def test_minimizer_is_lambert_w():
    assert symbolic.exp_minimizer() == sp.LambertW(symbolic.N / symbolic.lam)


def test_three_routes_to_the_series_agree():
    order = 8
    it, st = symbolic.series_by_iteration(order), symbolic.series_by_stirling(order)
    assert it == st
    exact = {
        (j, m): sp.Rational(c.numerator, c.denominator)
        for j, row in enumerate(debruijn_coefficients(order), 1)
        for m, c in enumerate(row, 1)
        if c
    }
    assert it == exact


def test_a_wrong_series_is_caught():
    """The comparison is not vacuous: perturbing one coefficient breaks equality."""
    it = symbolic.series_by_iteration(4)
    it[(3, 2)] += 1
    assert it != symbolic.series_by_stirling(4)
