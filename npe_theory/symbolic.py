"""Proposition 1 derived with sympy, not stated.

Each function returns sympy objects a reader can print; ``derivation_report``
collects them with a yes/no for every step. The series coefficients are obtained
by iterating ``w = L1 - ln w`` on truncated power series, a route independent of
the Stirling-number formula in ``lambertw.debruijn_coefficients``.
"""

from __future__ import annotations

import sympy as sp

from .losses import get_loss, loss_names

eta = sp.Symbol("eta", real=True)
N = sp.Symbol("N", positive=True)
lam = sp.Symbol("lambda", positive=True)
x = sp.Symbol("x", positive=True)


def objective(loss: str = "exp") -> sp.Expr:
    """J(eta) = N l(eta) + lam/2 eta^2 (feature norm folded into lam), l the registered loss's sympy expression."""
    return N * get_loss(loss).symbolic(eta) + lam / 2 * eta**2


def second_derivative(loss: str = "exp") -> sp.Expr:
    return sp.simplify(sp.diff(objective(loss), eta, 2))


def is_strictly_convex(loss: str = "exp") -> bool:
    """J'' > 0 for every real eta, decided by sympy's assumptions (N, lam > 0); for a piecewise loss (a kink in l'),
    on every piece: N l''(eta) + lam > 0 where l'' is the piece's expression."""
    second = second_derivative(loss)
    pieces = [second]
    if second.has(sp.Piecewise):
        pieces = [arg.expr for arg in sp.piecewise_fold(second).args]
    return all(bool(sp.simplify(piece).is_positive) for piece in pieces)


def closed_form_minimizer_matches(loss: str) -> bool | None:
    """For a loss with a closed-form optimum in x = N / lam (``OneWayLoss.symbolic_optimum``): J' vanishes there, checked
    on the piece of l that holds it; None for a loss without one."""
    spec = get_loss(loss)
    star = spec.symbolic_optimum(x)
    if star is None:
        return None
    jp = sp.diff(objective(loss), eta)
    if jp.has(sp.Piecewise):
        jp = next(arg.expr for arg in sp.piecewise_fold(jp).args if bool(arg.cond.subs(eta, star).subs(x, 1)))
    at = jp.subs(eta, star).subs(N, lam * x)
    at = at.subs(
        sp.exp(-sp.LambertW(x)), sp.LambertW(x) / x
    )  # W's defining identity, W e^W = x, which simplify does not apply
    return sp.simplify(at) == 0


def exp_minimizer() -> sp.Expr:
    """Solve J'(eta) = 0 for the exponential tail; sympy returns LambertW(N/lam)."""
    sols = sp.solve(sp.Eq(sp.diff(objective("exp"), eta), 0), eta)
    if len(sols) != 1:
        raise RuntimeError(f"expected one stationary point, sympy found {sols}")
    return sols[0]


def logistic_stationarity_matches() -> bool:
    """J'(eta) = 0 for the logistic loss is eta e^eta = x - eta with x = N / lam.

    J' * (1 + e^eta) / lam = eta (1 + e^eta) - N/lam; substitute N = lam x and compare.
    """
    jp = sp.diff(objective("logistic"), eta)
    scaled = sp.simplify(jp * (1 + sp.exp(eta)) / lam)
    target = eta * sp.exp(eta) - (x - eta)
    return sp.simplify(scaled.subs(N, lam * x) - target) == 0


def log_count_slope() -> sp.Expr:
    """d W(e^s) / ds, simplified: the sensitivity of eta* to ln N, equal to W / (1 + W)."""
    s = sp.Symbol("s", real=True)
    d = sp.diff(sp.LambertW(sp.exp(s)), s)
    w = sp.Symbol("W", positive=True)
    return sp.simplify(d.subs(sp.LambertW(sp.exp(s)), w))


def series_by_iteration(order: int) -> dict[tuple[int, int], sp.Rational]:
    """Coefficients c[j, m] of L2^m / L1^j in W(x), j = 1..order, by fixed-point iteration.

    With a = 1/L1 and w = L1 - L2 + v, the equation w = L1 - ln w becomes
    v = -ln(1 - a (L2 - v)). Starting at v = 0, each pass fixes one more power of a.
    """
    a, l2 = sp.symbols("a L2")

    def trunc(p: sp.Poly) -> sp.Poly:  # drop powers of a above `order`
        return sp.Poly.from_dict({k: c for k, c in p.as_dict().items() if k[0] <= order}, a, l2, domain=sp.QQ)

    v = sp.Poly(0, a, l2, domain=sp.QQ)
    for _ in range(order):
        u = trunc(sp.Poly(a, a, l2, domain=sp.QQ) * (sp.Poly(l2, a, l2, domain=sp.QQ) - v))
        term, log_series = u, u  # -ln(1 - u) = sum u^k / k, truncated
        for k in range(2, order + 1):
            term = trunc(term * u)
            log_series = log_series + term * sp.Rational(1, k)
        v = log_series
    return {(j, m): sp.Rational(c) for (j, m), c in v.as_dict().items() if c != 0}


def series_by_stirling(order: int) -> dict[tuple[int, int], sp.Rational]:
    """The same coefficients from the formula (-1)^(j-m) / m! * S1(j, j-m+1)."""
    from sympy.functions.combinatorial.numbers import stirling

    out = {}
    for j in range(1, order + 1):
        for m in range(1, j + 1):
            c = sp.Rational((-1) ** (j - m) * stirling(j, j - m + 1, kind=1, signed=False), sp.factorial(m))
            if c != 0:
                out[(j, m)] = c
    return out


def derivation_report(order: int = 6) -> list[tuple[str, bool, str]]:
    """(step, holds, detail) for every symbolic claim of Proposition 1."""
    w_star = exp_minimizer()
    slope = log_count_slope()
    W = sp.Symbol("W", positive=True)
    by_iter, by_stirling = series_by_iteration(order), series_by_stirling(order)
    convex = [
        (f"J'' > 0 ({name})", is_strictly_convex(name), str(second_derivative(name))) for name in loss_names()
    ]
    closed = [
        (
            f"{name}: J'(eta*) = 0 at eta* = {get_loss(name).symbolic_optimum(x)}",
            closed_form_minimizer_matches(name),
            "J' at the closed form",
        )
        for name in loss_names()
        if get_loss(name).symbolic_optimum(x) is not None
    ]
    return (
        convex
        + closed
        + [
            ("argmin J = LambertW(N/lambda)", sp.simplify(w_star - sp.LambertW(N / lam)) == 0, str(w_star)),
            ("logistic: eta e^eta = x - eta", logistic_stationarity_matches(), "J' (1 + e^eta) / lambda"),
            ("d eta*/d ln N = W/(1+W)", sp.simplify(slope - W / (1 + W)) == 0, str(slope)),
            (
                f"series to L1^-{order}: iteration = Stirling formula",
                by_iter == by_stirling,
                f"{len(by_iter)} coefficients",
            ),
        ]
    )
