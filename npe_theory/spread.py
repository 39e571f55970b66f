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
from scipy.optimize import root

from .blocks import class_slices, ragged_blocks
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
    order, edges = class_slices(y, C)
    for c in range(C):
        # float32 features: one class at a time in float64
        xc = h[order[edges[c] : edges[c + 1]]].astype(np.float64, copy=False)
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


def _padded(spread: ClassSpread, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eig, proj) of the classes ``rows`` as (n, R) arrays, zero-padded to their largest rank R, and their null terms:
    an eigenvalue 0 with a projection 0 adds nothing to g1 or g2, so the classes can be solved side by side."""
    R = max((len(spread.eig[c]) for c in rows), default=0)
    eig, proj = np.zeros((len(rows), R)), np.zeros((len(rows), R))
    for i, c in enumerate(rows):
        eig[i, : len(spread.eig[c])] = spread.eig[c]
        proj[i, : len(spread.proj[c])] = spread.proj[c]
    return eig, proj, np.asarray(spread.null, dtype=np.float64)[rows]


def _class_blocks(spread: ClassSpread):
    """The classes in groups of similar rank (``ragged_blocks``: about 1e6 padded spectrum entries each), padded."""
    for rows in ragged_blocks([len(e) for e in spread.eig]):
        yield (rows, *_padded(spread, rows))


def _moments(p, r, lam: float, eig, proj, null) -> tuple[np.ndarray, np.ndarray]:
    """(mu, s^2) of t = w . x at w = p (lam + r S)^-1 m, one per row: ``p``, ``r`` (n,), ``eig``, ``proj`` (n, R)."""
    d = lam + np.asarray(r)[:, None] * eig
    with np.errstate(over="ignore", under="ignore"):  # (eig / d) (proj / d): no d**2 to underflow at tiny lam
        q = proj / d
        g1 = q.sum(1) + null / lam
        g2 = ((eig / d) * q).sum(1)
        return p * g1, p * (p * g2)


def _bracketed_newton(fun, lo: np.ndarray, hi: np.ndarray, x: np.ndarray, sign_lo: np.ndarray) -> np.ndarray:
    """A root in [lo, hi] of every row's function, all rows at once. ``fun(x, rows) -> (f, slope)`` for the rows
    ``rows``; ``sign_lo`` the sign of f at ``lo`` (f changes sign in the bracket). Newton steps while they land inside
    the bracket and shrink to under half the step before last, bisection otherwise (Numerical Recipes' ``rtsafe``
    rule); a row stops when its step is below 1e-14 of max(1, |x|) or its bracket at rounding. Returns the last
    iterate (at most 200 steps)."""
    lo, hi, x = lo.copy(), hi.copy(), x.copy()
    todo = np.arange(x.size)
    older = hi - lo  # the step before the last one
    last = older.copy()
    for _ in range(200):
        if not todo.size:
            break
        xs, ls, hs = x[todo], lo[todo], hi[todo]
        f, slope = fun(xs, todo)
        below = np.sign(f) == sign_lo[todo]
        ls, hs = np.where(below, xs, ls), np.where(below, hs, xs)
        step = f / slope
        new = xs - step
        newton = (ls < new) & (new < hs) & (np.abs(step) <= 0.5 * np.abs(older[todo]))
        new = np.where(newton, new, 0.5 * (ls + hs))
        scale = np.maximum(1.0, np.abs(xs))
        done = (f == 0) | (np.abs(step) <= 1e-14 * scale) | (hs - ls <= 4e-16 * scale)
        older[todo], last[todo] = last[todo], np.abs(new - xs)
        go = todo[~done]
        x[go], lo[go], hi[go] = new[~done], ls[~done], hs[~done]
        todo = go
    return x


def _solve_exp(a, lam: float, eig, proj, null) -> np.ndarray:
    """ln k of the exponential tail, per row: u - ln a + mu(k) - s^2(k) / 2 = 0 with k = e^u; increasing in u, bracketed
    by [ln(lam W(a M / lam) / M), ln a] (the collapsed answer below, the no-push answer above)."""
    M = proj.sum(1) + null
    log_a = np.log(a)
    lo = np.log(lam / M) + np.log(lambert_w_of_exp(log_a + np.log(M) - np.log(lam)))

    def fun(u, rows):
        k = np.exp(u)
        e, q, n = eig[rows], proj[rows], null[rows]
        mu, s2 = _moments(k, k, lam, e, q, n)
        d = lam + k[:, None] * e
        with np.errstate(
            over="ignore", under="ignore"
        ):  # k lam^2 proj / d^3, arranged so no power underflows
            slope = 1.0 + (k[:, None] * (lam / d) ** 2 * (q / d)).sum(1) + k * (n / lam)
        return u - log_a[rows] + mu - s2 / 2, slope

    return _bracketed_newton(fun, lo, np.maximum(log_a, lo), lo, np.full(lo.size, -1.0))


def _pair_residual(loss, log_a, u, v, lam: float, eig, proj, null):
    """(F1, F2, mu, s^2, m) with F = (u - ln a - ln E[p(t)], v - ln a - ln E[l''(t)]), t ~ N(mu, s^2) at p = e^u,
    r = e^v, and m (2, n) those two log-moments; a row whose moments leave the float range (a trial far out) gets
    F = inf."""
    with np.errstate(all="ignore"):
        mu, s2 = _moments(np.exp(u), np.exp(v), lam, eig, proj, null)
        ok = np.isfinite(mu) & np.isfinite(s2)
        m1, m2 = np.full(u.size, np.inf), np.full(u.size, np.inf)
        try:
            m1[ok], m2[ok] = loss.gaussian_log_moments(mu[ok], s2[ok])
        except (
            ArithmeticError
        ):  # a spread the quadrature refuses: that row is far from its root, scored as such
            for i in np.flatnonzero(ok):
                try:
                    m1[i], m2[i] = loss.gaussian_log_moments(mu[i], s2[i])
                except ArithmeticError:
                    pass
        f1, f2 = u - log_a - m1, v - log_a - m2
        bad = ~(np.isfinite(f1) & np.isfinite(f2))
        f1[bad] = f2[bad] = np.inf
        return f1, f2, mu, s2, np.stack([m1, m2])


def _solve_pairs(loss, a, lam: float, eig, proj, null, u0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ln p, ln r, solved) of a loss whose curvature is not its push, every row at once: Newton's method on the two
    equations from the exponential tail's answer (u0, u0), the Jacobian from d(mu, s^2)/d(u, v) in closed form and the
    loss's moments differenced, each step halved until the residual falls. ``solved`` is False for rows left above
    1e-10 (the caller solves those one by one)."""
    log_a = np.log(a)
    u, v = u0.copy(), u0.copy()
    err = np.full(u.size, np.inf)
    todo = np.arange(u.size)
    for _ in range(60):
        if not todo.size:
            break
        e, q, n, la = eig[todo], proj[todo], null[todo], log_a[todo]
        us, vs = u[todo], v[todo]
        f1, f2, mu, s2, base = _pair_residual(loss, la, us, vs, lam, e, q, n)
        norm = np.maximum(np.abs(f1), np.abs(f2))
        err[todo] = norm
        live = norm > 1e-14 * np.maximum(1.0, np.maximum(np.abs(us), np.abs(vs)))
        live &= np.isfinite(norm)
        todo, e, q, n, la, us, vs, f1, f2, mu, s2, norm = (
            t[live] for t in (todo, e, q, n, la, us, vs, f1, f2, mu, s2, norm)
        )
        base = base[:, live]  # the moments at (mu, s^2), which the differences below start from
        if not todo.size:
            break
        p, r = np.exp(us), np.exp(vs)
        d = lam + r[:, None] * e
        with np.errstate(all="ignore"):
            mu_v = -p * r * (e * q / d**2).sum(1)  # p r g1'(r)
            s2_v = -2 * p * p * r * (e * e * q / d**3).sum(1)  # p^2 r g2'(r)
            h_mu, h_s2 = 1e-7 * np.maximum(1.0, np.abs(mu)), 1e-7 * np.maximum(1.0, s2)
            d_mu = (np.stack(loss.gaussian_log_moments(mu + h_mu, s2)) - base) / h_mu
            d_s2 = (np.stack(loss.gaussian_log_moments(mu, s2 + h_s2)) - base) / h_s2
            # dF_i/du = [i == 1] - dm_i/dmu mu - dm_i/ds2 2 s^2;  dF_i/dv = [i == 2] - dm_i/dmu mu_v - dm_i/ds2 s2_v
            j11 = 1.0 - d_mu[0] * mu - d_s2[0] * 2 * s2
            j12 = -d_mu[0] * mu_v - d_s2[0] * s2_v
            j21 = -d_mu[1] * mu - d_s2[1] * 2 * s2
            j22 = 1.0 - d_mu[1] * mu_v - d_s2[1] * s2_v
            det = j11 * j22 - j12 * j21
            du, dv = -(j22 * f1 - j12 * f2) / det, -(j11 * f2 - j21 * f1) / det
        moving = np.isfinite(du) & np.isfinite(dv)
        t = np.ones(todo.size)
        pending = np.flatnonzero(moving)
        for _ in range(40):  # halve the step until the residual falls
            if not pending.size:
                break
            tu, tv = us[pending] + t[pending] * du[pending], vs[pending] + t[pending] * dv[pending]
            g1, g2, *_ = _pair_residual(loss, la[pending], tu, tv, lam, e[pending], q[pending], n[pending])
            better = np.maximum(np.abs(g1), np.abs(g2)) < norm[pending]
            u[todo[pending[better]]], v[todo[pending[better]]] = tu[better], tv[better]
            moving[pending[better]] = True
            pending = pending[~better]
            t[pending] /= 2
        stuck = np.zeros(todo.size, dtype=bool)
        stuck[pending] = True
        stuck |= ~np.isfinite(du) | ~np.isfinite(dv)
        todo = todo[~stuck]  # no step lowers the residual: at rounding level, or the caller's to solve
    return u, v, err < 1e-10


def _solve_pair(loss, a: float, lam: float, eig, proj, null: float, u0: float) -> tuple[float, float]:
    """(ln p, ln r) of one class whose Newton iteration (``_solve_pairs``) did not settle: scipy's hybrid method from
    three starts. ``eig``, ``proj`` (1, R) and ``null`` (1,) of the class."""
    log_a = np.log(a)

    def residual(z):
        f1, f2, *_ = _pair_residual(loss, log_a, np.array([z[0]]), np.array([z[1]]), lam, eig, proj, null)
        out = [float(f1[0]), float(f2[0])]
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
    spread (module docstring): ``mu_c = p_c g1_c(r_c)``. Reduces to ``predicted_priors`` at zero spread.

    All classes are solved together (groups of similar rank, padded): a bracketed Newton iteration for the exponential
    tail, then for another loss Newton's method on (ln p, ln r), with scipy's hybrid method for any class it leaves
    unsettled. Accuracy: the fixed point to about 1e-13 relative."""
    _spread(spread)
    loss = get_loss(loss)
    choice("reduction", reduction, REDUCTIONS)
    lam = as_float_scalar("lam", lam, positive=True)
    a = _effective_counts(counts, reduction, as_float_scalar("weight", weight, positive=True))
    if a.ndim != 1 or a.size != len(spread.null):
        raise InputError(f"counts: expected {len(spread.null)} classes, got shape {a.shape}")
    out = np.zeros(a.size)  # a class with no feature and no bias: the PEM cannot move
    with _named("lam, counts"):
        for rows, eig, proj, null in _class_blocks(spread):
            live = proj.sum(1) + null > 0
            rows, eig, proj, null, ac = rows[live], eig[live], proj[live], null[live], a[rows[live]]
            if not rows.size:
                continue
            u = _solve_exp(ac, lam, eig, proj, null)
            v = u
            if not loss.curvature_is_push:
                u, v, solved = _solve_pairs(loss, ac, lam, eig, proj, null, u)
                for i in np.flatnonzero(
                    ~solved
                ):  # the rare class Newton leaves: alone, by scipy's hybrid method
                    u[i], v[i] = _solve_pair(
                        loss, ac[i], lam, eig[i : i + 1], proj[i : i + 1], null[i : i + 1], u[i]
                    )
            out[rows] = _moments(np.exp(u), np.exp(v), lam, eig, proj, null)[0]
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
    (features without a spread-free direction) are clamped to shares e^-700 and e^300. All classes are solved together
    by bracketed Newton iterations (to about 1e-13 in the logarithms)."""
    _spread(spread)
    loss = get_loss(loss)
    lam = as_float_scalar("lam", lam, positive=True)
    weight = as_float_scalar("weight", weight, positive=True)
    e = as_float_array("eta", eta)
    if e.shape != (len(spread.null),):
        raise InputError(f"eta: expected {len(spread.null)} per-class outputs, got shape {e.shape}")
    out = np.full(e.size, -700.0)  # no preimage
    with _named("lam, eta"):
        for rows, eig, proj, null in _class_blocks(spread):
            mu = e[rows]
            live = (mu > 0) & (proj.sum(1) + null > 0)
            out[rows[live]] = _inverse(mu[live], lam, eig[live], proj[live], null[live], loss)
    if not np.all(np.isfinite(out)):
        raise NoRoot(f"lam, eta: the inverse leaves the float64 range (lam = {lam!r})")
    return np.clip(out, -700.0, 300.0) - np.log(weight)


def _excess(mu, lam: float, eig, proj, null):
    """f(u, rows) = mu(k) - mu at k = e^u for the exponential tail, and its slope in u, k (sum lam proj / d^2 +
    null / lam) > 0, for the rows ``rows``."""

    def f(u, rows):
        k = np.exp(u)
        got = _moments(k, k, lam, eig[rows], proj[rows], null[rows])[0]
        d = lam + k[:, None] * eig[rows]
        return got - mu[rows], k * ((lam * proj[rows] / d**2).sum(1) + null[rows] / lam)

    return f


def _inverse(mu, lam: float, eig, proj, null, loss) -> np.ndarray:
    """ln a per row for outputs ``mu > 0`` (``spread_inverse``); 300 where no finite share reaches ``mu``."""
    # exponential tail: mu(k) = k g1(k) increases from 0; mu(k) <= k M / lam puts the root at or above lam mu / M
    lo = np.log(lam * mu / (proj.sum(1) + null))
    hi = lo + 1.0
    excess = _excess(mu, lam, eig, proj, null)
    short, ok = np.arange(mu.size), np.ones(mu.size, dtype=bool)
    while short.size:
        f = excess(hi[short], short)[0]
        ok[short[~np.isfinite(f)]] = False  # k = e^hi overflowed before mu(k) reached mu
        short = short[f < 0]
        hi[short] = lo[short] + 2 * (hi[short] - lo[short])
        ok[short[hi[short] - lo[short] > 2000]] = False
        short = short[ok[short]]
    out = np.full(mu.size, 300.0)  # mu beyond what the spread directions allow: no finite share
    if ok.any():
        out[ok] = _inverse_bracketed(mu[ok], lam, eig[ok], proj[ok], null[ok], loss, lo[ok], hi[ok])
    return out


def _inverse_bracketed(mu, lam: float, eig, proj, null, loss, lo, hi) -> np.ndarray:
    """``_inverse`` for rows whose exponential-tail root lies in [lo, hi]."""
    excess = _excess(mu, lam, eig, proj, null)
    at_lo = excess(lo, np.arange(mu.size))[0] >= 0  # f(lo) = 0 without spread
    u = np.where(at_lo, lo, _bracketed_newton(excess, lo, hi, lo, np.full(mu.size, -1.0)))
    p = r = np.exp(u)
    if not loss.curvature_is_push:
        r = np.exp(_inverse_curvature(loss, mu, lam, eig, proj, null, u))
        p = mu / _moments(np.ones(mu.size), r, lam, eig, proj, null)[0]
    s2 = _moments(p, r, lam, eig, proj, null)[1]
    return np.log(p) - loss.gaussian_log_moments(mu, s2)[0]


def _inverse_curvature(loss, mu, lam: float, eig, proj, null, top) -> np.ndarray:
    """ln r at outputs ``mu``, per row: the root of g(v) = v - ln p(v) - (ln E[l''] - ln E[p]) with p(v) = mu / g1(e^v),
    searched from the exponential tail's answer ``top`` (where g = ln E[p] - ln E[l'']) toward the side g's sign points
    to, the bracket doubled until g changes sign; NoRoot when a row has none within 2000 of it. The slope of g for
    Newton's steps is differenced."""

    def g(v, rows):
        r = np.exp(v)
        e, q, n = eig[rows], proj[rows], null[rows]
        pv = mu[rows] / _moments(np.ones(v.size), r, lam, e, q, n)[0]
        s2 = _moments(pv, r, lam, e, q, n)[1]
        m1, m2 = loss.gaussian_log_moments(mu[rows], s2)
        return v - np.log(pv) - (m2 - m1)

    def g_and_slope(v, rows):
        h = 1e-7 * np.maximum(1.0, np.abs(v))
        f = g(v, rows)
        return f, (g(v + h, rows) - f) / h

    every = np.arange(mu.size)
    g_top = g(top, every)
    if not np.all(np.isfinite(g_top)):
        raise NoRoot("spread-aware inverse: the fixed point's equation is not finite at the start")
    direction, step = np.where(g_top > 0, -1.0, 1.0), np.ones(mu.size)
    other = top + direction * step
    search = np.flatnonzero(g_top != 0)
    while search.size:
        g_other = g(other[search], search)
        found = np.isfinite(g_other) & (np.sign(g_other) != np.sign(g_top[search]))
        search = search[~found]
        step[search] *= 2
        if np.any(step[search] > 2000):
            raise NoRoot("spread-aware inverse: no root found")
        other[search] = top[search] + direction[search] * step[search]
    lo, hi = np.minimum(other, top), np.maximum(other, top)
    sign_lo = np.where(lo == top, np.sign(g_top), -np.sign(g_top))
    v = _bracketed_newton(g_and_slope, lo, hi, top, sign_lo)
    return np.where(g_top == 0, top, v)
