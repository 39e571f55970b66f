"""Proposition 1 with within-class spread: the optimal PEM output when each class's features are Gaussian.

Proposition 1 assumes collapse: every class-c feature is its mean. Real features spread, and since
the PEM's loss is convex in its output, the spread changes the optimum (docs/theory.md, section 7).
Model: the augmented features ``x = [h, 1]`` of class c are Gaussian with mean ``m`` and covariance
``S`` (zero on the bias coordinate). Row c of a linear PEM, ``w``, minimizes

    a_c E[l(w . x)] + lam / 2 ||w||^2,      a_c = weight * (pi_c or N_c),

and by Stein's lemma, ``E[f(x) x] = E[f] m + S E[grad f]``, its stationarity condition is

    lam w = p m - r S w   =>   w = p (lam I + r S)^-1 m,     p = a_c E[-l'(t)],  r = a_c E[l''(t)],

with ``t = w . x ~ N(mu, s^2)``, ``mu = p g1(r)``, ``s^2 = p^2 g2(r)``, ``g1 = m' (lam + r S)^-1 m``,
``g2 = m' (lam + r S)^-1 S (lam + r S)^-1 m``. For the exponential tail ``p = r = k`` and
``k = a_c exp(-mu + s^2 / 2)``: one monotone scalar equation. For another loss, ``p`` and ``r`` are the
Gaussian expectations the loss object gives (``OneWayLoss.gaussian_log_moments``: the logistic loss by a
tilted trapezoid rule, the squared hinge in closed form), a fixed point in two unknowns started from the
exponential tail's answer. The returned value is ``mu``, the class-c mean of the PEM's output, the quantity
a report measures. At zero spread ``g1 = ||m||^2 / lam``, ``g2 = 0``, and the equation is Proposition 1's.

Only the eigenvalues of ``S`` and the projections of ``m`` on its eigenvectors enter, so each class
is summarized by ``(eigenvalues, squared projections)`` from a thin SVD of its centered features.
May import: numpy, scipy, the npe_theory modules below it (no torch).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, root

from .errors import InputError
from .lambertw import lambert_w_of_exp
from .losses import get_loss
from .priors import _effective_counts
from .validate import (
    REDUCTIONS,
    as_float_array,
    as_float_scalar,
    choice,
    class_count,
    features_and_labels,
    instance,
)


class NoRoot(InputError, ArithmeticError):
    """The fixed point was not found (a degenerate problem, e.g. a weight decay near 0 with spread features); the
    public functions name ``lam`` in its message."""


@dataclass(frozen=True)
class ClassSpread:
    """Per class c: ``eig[c]`` the eigenvalues of the within-class covariance (on its support) and
    ``proj[c]`` the squared projections of the augmented class mean on those eigenvectors;
    ``null[c]`` the rest of ``||m||^2`` (directions without spread, the bias coordinate included)."""

    eig: list
    proj: list
    null: np.ndarray
    along: np.ndarray | None = None  # variance of h . m / ||m|| within the class (class_spread only)
    norm_sq: np.ndarray | None = None  # ||m||^2 of the feature means, no bias coordinate (class_spread only)

    @property
    def mean_norm_sq(self) -> np.ndarray:
        """||m_c||^2 of the augmented class means."""
        return np.array([p.sum() for p in self.proj]) + self.null


def spectrum(x: np.ndarray, rank_tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues (r,), descending, eigenvectors as rows (r, D)) of ``x' x`` for a centered, scaled class block ``x``
    (n, D), those above ``rank_tol`` times the largest: from the smaller of the two Gram matrices, ``x' x`` (D, D) or
    ``x x'`` (n, n), by ``eigh`` (about 3x faster than a thin SVD). From ``x x' = U L U'`` the eigenvectors are
    ``U' x / sqrt(L)``; an eigenvalue at 1e-12 of the largest keeps about 10 digits."""
    n, D = x.shape
    if n >= D:
        eig, vec = np.linalg.eigh(x.T @ x)
        eig, rows = eig[::-1], vec[:, ::-1].T
    else:
        eig, u = np.linalg.eigh(x @ x.T)
        eig, u = eig[::-1], u[:, ::-1]
        rows = (u.T @ x) / np.sqrt(np.maximum(eig, 1e-300))[:, None]
    keep = eig > rank_tol * max(float(eig[0]) if eig.size else 0.0, 1e-300)
    return eig[keep], rows[keep]


def class_spread(
    features, labels, num_classes: int, *, bias: bool = True, rank_tol: float = 1e-12
) -> ClassSpread:
    """Class means and within-class covariances (1/n_c normalization) of ``features``, as ``ClassSpread``.

    Each class's spectrum from the smaller of its two Gram matrices (``spectrum``): cost O(n_c D min(n_c, D)).
    """
    h, y, C = features_and_labels(features, labels, num_classes)
    eig, proj, null, along, norm_sq = [], [], np.zeros(C), np.zeros(C), np.zeros(C)
    for c in range(C):
        xc = h[y == c].astype(np.float64, copy=False)  # float32 features: this class alone in float64
        m = xc.mean(0)
        ev, vt = spectrum((xc - m) / np.sqrt(len(xc)), rank_tol)
        q2 = (vt @ m) ** 2
        eig.append(ev)
        proj.append(q2)
        null[c] = max(float(m @ m) - float(q2.sum()), 0.0) + (1.0 if bias else 0.0)
        norm_sq[c] = float(m @ m)
        norm = np.sqrt(norm_sq[c])
        along[c] = float(np.mean(((xc - m) @ (m / norm)) ** 2)) if norm > 0 else 0.0
    return ClassSpread(eig, proj, null, along, norm_sq)


def spread_statistics(spread: ClassSpread) -> tuple[float, float]:
    """(mean over classes of ||mu_c||^2, mean over classes of Var(h . mu_c / ||mu_c|| | c) / ||mu_c||^2) of a
    ``class_spread`` result: the scale of Proposition 1's x_c, and the squared coefficient of variation of the features
    along their class mean (how far the spread moves the optimum; ``along_mean`` builds the model from the two)."""
    _spread(spread)
    if spread.norm_sq is None or spread.along is None:
        raise InputError("spread: holds no feature norms (class_spread makes them; along_mean does not)")
    norm_sq = spread.norm_sq
    ok = norm_sq > 0
    return float(norm_sq.mean()), float(np.mean(spread.along[ok] / norm_sq[ok])) if ok.any() else 0.0


def along_mean(norm_sq, spread_ratio, num_classes: int, *, bias: bool = True) -> ClassSpread:
    """The two-statistic model: every class mean has squared norm ``norm_sq`` and its features vary along the
    mean's direction with variance ``spread_ratio * norm_sq`` (the squared coefficient of variation of
    ``h . m / ||m||``), and not across it. Scalars or per-class arrays."""
    num_classes = class_count("num_classes", num_classes)
    n, rho = (
        _per_class(name, value, num_classes)
        for name, value in (("norm_sq", norm_sq), ("spread_ratio", spread_ratio))
    )
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(rho * n)):
            raise InputError("norm_sq, spread_ratio: the variance spread_ratio * norm_sq overflows float64")
    return ClassSpread(
        [np.array([rho[c] * n[c]]) for c in range(num_classes)],
        [np.array([n[c]]) for c in range(num_classes)],
        np.full(num_classes, 1.0 if bias else 0.0),
    )


def _per_class(name: str, value, num_classes: int) -> np.ndarray:
    arr = as_float_array(name, value, nonnegative=True)
    if arr.size != 1 and arr.shape != (num_classes,):
        raise InputError(
            f"{name}: expected one number or {num_classes} (one per class), got shape {arr.shape}"
        )
    return np.broadcast_to(arr.reshape(-1), (num_classes,))


@contextmanager
def _named(names: str):
    """A solver that fails on valid but extreme input (a weight decay near 0 or the float range's end) says so as an
    InputError naming the arguments, not as an arithmetic error from inside."""
    try:
        with np.errstate(
            all="ignore"
        ):  # an extreme trial is caught by the finiteness checks, not warned about
            yield
    except ArithmeticError as exc:
        raise NoRoot(
            f"{names}: {exc}; the weight decay or the outputs are too extreme for the spread model"
        ) from None


def _spread(spread) -> ClassSpread:
    return instance("spread", spread, ClassSpread, "a ClassSpread (from class_spread or along_mean)")


def _moments(
    p: float, r: float, lam: float, eig: np.ndarray, proj: np.ndarray, null: float
) -> tuple[float, float]:
    """(mu, s^2) of t = w . x at w = p (lam + r S)^-1 m."""
    d = lam + r * eig
    with np.errstate(over="ignore", under="ignore"):  # (eig / d) (proj / d): no d**2 to underflow at tiny lam
        g1 = float(np.sum(proj / d)) + null / lam
        g2 = float(np.sum((eig / d) * (proj / d)))
        return p * g1, p * (p * g2)


def _solve_exp(a: float, lam: float, eig, proj, null: float) -> float:
    """ln k of the exponential tail: u - ln a + mu(k) - s^2(k) / 2 = 0 with k = e^u; increasing in u, bracketed by
    [ln(lam W(a M / lam) / M), ln a] (the collapsed answer below, the no-push answer above)."""
    M = float(proj.sum()) + null
    lo, hi = np.log(lam / M) + np.log(float(lambert_w_of_exp(np.log(a) + np.log(M) - np.log(lam)))), np.log(a)
    u = lo
    for _ in range(200):
        k = np.exp(u)
        mu, s2 = _moments(k, k, lam, eig, proj, null)
        f = u - np.log(a) + mu - s2 / 2
        if abs(f) <= 1e-14 * max(1.0, abs(u)) or hi - lo <= 4e-16 * max(1.0, abs(u)):
            break
        if f > 0:
            hi = u
        else:
            lo = u
        d = lam + k * eig
        with np.errstate(
            over="ignore", under="ignore"
        ):  # k lam^2 proj / d^3, arranged so no power underflows
            slope = 1.0 + float(np.sum(k * (lam / d) ** 2 * (proj / d))) + k * (null / lam)
        step = u - f / slope
        u = step if lo < step < hi else 0.5 * (lo + hi)
    return u


def _solve_pair(loss, a: float, lam: float, eig, proj, null: float, u0: float) -> tuple[float, float]:
    """(ln p, ln r) of a loss whose curvature is not its push, from the exponential tail's answer ``u0``."""
    log_a = np.log(a)

    def residual(z):
        u, v = z
        with np.errstate(all="ignore"):  # a trial point far out: a large residual sends the solver back
            mu, s2 = _moments(np.exp(u), np.exp(v), lam, eig, proj, null)
            if not (np.isfinite(mu) and np.isfinite(s2)):
                return [1e30, 1e30]
            try:
                m1, m2 = loss.gaussian_log_moments(mu, s2)
            except ArithmeticError:  # a trial point the quadrature cannot resolve: far from the root
                return [1e30, 1e30]
            out = [u - log_a - m1, v - log_a - m2]
            return out if np.all(np.isfinite(out)) else [1e30, 1e30]

    best = None
    for start in ((u0, u0), (u0, u0 + np.log(0.25)), (u0 - 1.0, u0 - 2.0)):
        sol = root(residual, start, method="hybr", options={"xtol": 1e-13})
        err = float(np.max(np.abs(residual(sol.x))))
        if best is None or err < best[1]:
            best = (sol.x, err)
        if err < 1e-10:
            break
    if not best[1] < 1e-8:
        raise NoRoot(f"spread-aware optimum: no root found (residual {best[1]:.2g})")
    return float(best[0][0]), float(best[0][1])


def spread_logit(
    spread: ClassSpread, counts, lam, *, loss: str = "logistic", reduction: str = "mean", weight: float = 1.0
) -> np.ndarray:
    """E[eta_c | y = c] at the optimum of a linear PEM when class c's features are Gaussian with the given
    spread (module docstring): ``mu_c = p_c g1_c(r_c)``. Reduces to ``predicted_priors`` at zero spread."""
    _spread(spread)
    loss = get_loss(loss)
    choice("reduction", reduction, REDUCTIONS)
    lam = as_float_scalar("lam", lam, positive=True)
    a = _effective_counts(counts, reduction, as_float_scalar("weight", weight, positive=True))
    if a.ndim != 1 or a.size != len(spread.null):
        raise InputError(f"counts: expected {len(spread.null)} classes, got shape {a.shape}")
    out = np.empty(a.size)
    with _named("lam, counts"):
        for c in range(a.size):
            eig, proj, null = spread.eig[c], spread.proj[c], float(spread.null[c])
            if float(proj.sum()) + null <= 0:
                out[c] = 0.0  # no feature and no bias: the PEM cannot move
                continue
            u = _solve_exp(float(a[c]), lam, eig, proj, null)
            v = u
            if not loss.curvature_is_push:
                u, v = _solve_pair(loss, float(a[c]), lam, eig, proj, null, u)
            out[c] = _moments(np.exp(u), np.exp(v), lam, eig, proj, null)[0]
    if not np.all(np.isfinite(out)):
        raise InputError(f"lam, counts: the optimum leaves the float64 range (lam = {lam!r})")
    return out


def spread_inverse(
    spread: ClassSpread, eta, lam, *, loss: str = "logistic", weight: float = 1.0
) -> np.ndarray:
    """The log class shares ``ln pi_c`` (up to a constant) that make the learned per-class outputs ``eta`` optimal
    under the spread model: ``spread_logit`` inverted class by class, the inverse the NPE-inverse rule needs when
    features spread. With the output ``mu`` given, the fixed point is one equation in one unknown: for the
    exponential tail ``mu = k g1(k)`` (increasing in k); for another loss, in ``v = ln r`` with
    ``p = mu / g1(r)``, ``ln(r / p) = ln(E[l''] / E[p])``. Then ``ln a_c = ln p - ln E[p(t)]`` as in
    ``spread_logit``. Outputs at or below 0 (no preimage) and outputs beyond what any share reaches
    (features without a spread-free direction) are clamped to shares e^-700 and e^300."""
    _spread(spread)
    loss = get_loss(loss)
    lam = as_float_scalar("lam", lam, positive=True)
    weight = as_float_scalar("weight", weight, positive=True)
    e = as_float_array("eta", eta)
    if e.shape != (len(spread.null),):
        raise InputError(f"eta: expected {len(spread.null)} per-class outputs, got shape {e.shape}")
    with _named("lam, eta"):
        out = np.array(
            [
                _inverse_one(float(e[c]), lam, spread.eig[c], spread.proj[c], float(spread.null[c]), loss)
                for c in range(e.size)
            ]
        )
    if not np.all(np.isfinite(out)):
        raise NoRoot(f"lam, eta: the inverse leaves the float64 range (lam = {lam!r})")
    return np.clip(out, -700.0, 300.0) - np.log(weight)


def _inverse_one(mu: float, lam: float, eig, proj, null: float, loss: str) -> float:
    M = float(proj.sum()) + null
    if mu <= 0 or M <= 0:
        return -700.0
    # exponential tail: mu(k) = k g1(k) increases from 0; mu(k) <= k M / lam puts the root at or above lam mu / M
    f = lambda u: _moments(np.exp(u), np.exp(u), lam, eig, proj, null)[0] - mu  # noqa: E731
    lo = np.log(lam * mu / M)
    hi = lo + 1.0
    while f(hi) < 0:
        hi = lo + 2 * (hi - lo)
        if hi - lo > 2000:
            return 300.0  # mu beyond what the spread directions allow: no finite share
    u = lo if f(lo) >= 0 else brentq(f, lo, hi, xtol=1e-13, rtol=1e-15)  # f(lo) = 0 without spread
    p = r = np.exp(u)
    if not loss.curvature_is_push:
        r = np.exp(_inverse_curvature(loss, mu, lam, eig, proj, null, u))
        p = mu / _moments(1.0, r, lam, eig, proj, null)[0]
    s2 = _moments(p, r, lam, eig, proj, null)[1]
    return float(np.log(p) - loss.gaussian_log_moments(mu, s2)[0])


def _inverse_curvature(loss, mu: float, lam: float, eig, proj, null: float, top: float) -> float:
    """ln r at output ``mu``: the root of g(v) = v - ln p(v) - (ln E[l''] - ln E[p]) with p(v) = mu / g1(e^v), searched
    from the exponential tail's answer ``top`` (where g = ln E[p] - ln E[l'']) toward the side g's sign points to;
    NoRoot when there is none within 2000 of it."""

    def g(v):
        pv = mu / _moments(1.0, np.exp(v), lam, eig, proj, null)[0]
        s2 = _moments(pv, np.exp(v), lam, eig, proj, null)[1]
        m1, m2 = loss.gaussian_log_moments(mu, s2)
        return v - np.log(pv) - (m2 - m1)

    with np.errstate(all="ignore"):
        g_top = g(top)
        if g_top == 0:
            return top
        if not np.isfinite(g_top):
            raise NoRoot("spread-aware inverse: the fixed point's equation is not finite at the start")
        direction, step = (-1.0 if g_top > 0 else 1.0), 1.0
        while True:
            other = top + direction * step
            g_other = g(other)
            if np.isfinite(g_other) and np.sign(g_other) != np.sign(g_top):
                break
            step *= 2
            if step > 2000:
                raise NoRoot("spread-aware inverse: no root found")
        lo, hi = sorted((other, top))
        return float(brentq(g, lo, hi, xtol=1e-13, rtol=1e-15))
