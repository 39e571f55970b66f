"""The unconstrained feature model (UFM) with a PEM: Neural Collapse, then Proposition 1, measured.

Free per-sample features H (n x d), a linear classifier (W, b) trained with
cross-entropy and a linear PEM (V, c) trained with the one-way loss, weight
decay on all three, float64, full batch, minimized by L-BFGS-B to a stationary
point. ReLU features are the constraint H >= 0 (a bound for L-BFGS-B): writing
them as relu(U) makes the problem non-smooth and the optimizer stalls far from
collapse (figures/README.md, F6).

    F = s * [ sum_i CE(W h_i + b, y_i) + weight * l(v_{y_i} . h_i + c_{y_i}) + lam_H/2 ||h_i||^2 ]
        + lam_W/2 (||W||^2 + ||b||^2) + lam_P/2 (||V||^2 + [||c||^2])

with s = 1/n ("mean") or 1 ("sum").

``features="classes"`` solves the same problem restricted to collapsed features, one vector per class
counted N_c times. That loses no stationary point: given (W, b, V, c), a sample's terms are strictly
convex in its h_i (lam_H > 0) over the convex set h_i >= 0, and all class-c samples share them, so at
every stationary point they sit at the same h_c (docs/theory.md, section 6). Its variables are
C (3d + 2) rather than n d + C (2d + 2), and they are scaled by sqrt(s N_c), which evens out the
curvature the counts put on each class's feature (L-BFGS converges in hundreds of iterations, not
thousands). NC1 is then zero by construction; the per-sample model is the one that shows collapse
happen.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from threadpoolctl import threadpool_limits

from .collapse import class_means, classifier_alignment, cosine_matrix, loglog_slope, nc1
from .errors import InputError
from .losses import check_loss, get_loss
from .priors import _counts, predicted_priors
from .validate import REDUCTIONS, as_float_scalar, choice, nonnegative_int, positive_int

NONLINEARITIES = ("relu", "none")
FEATURE_MODELS = ("samples", "classes")
MAXCOR = 10


def _kept(iteration: int) -> bool:
    """History is recorded at iterations 1-99, then every 10th to 999, every 100th to 9,999, ...: a few hundred records
    however long the run (each costs an NC1, O(n d^2), more than an iteration of the per-sample model)."""
    return iteration % max(1, 10 ** (len(str(iteration)) - 2)) == 0


@dataclass
class UFMResult:
    """What a UFM run learned and what Proposition 1 predicts from its own measured norms."""

    counts: np.ndarray
    eta_learned: np.ndarray  # mean of eta_c(h_i) over class-c samples
    eta_predicted: np.ndarray  # predicted_priors at the measured ||mu_c||^2
    mean_norm_sq: np.ndarray  # ||mu_c||^2
    eta_matrix: np.ndarray  # E[eta(h) | y = c'], rows c', columns c
    cosines: np.ndarray  # cosine matrix of the class means
    nc1: float
    grad_norm: float  # projected gradient norm at the end (bounds respected)
    objective: float
    iterations: int
    seconds: float
    message: str
    config: dict
    class_mean_vectors: np.ndarray = None  # mu_c, (C, d)
    classifier: np.ndarray = None  # classifier rows w_c, (C, d)
    classifier_bias_values: np.ndarray = None  # b, (C,)
    pem_weight: np.ndarray = None  # PEM rows v_c, (C, d)
    pem_bias: np.ndarray = None  # PEM biases c_c, (C,); zeros without a bias
    geometry: dict = field(
        default_factory=dict
    )  # docs/theory.md, section 6, measured: collapse.classifier_alignment + norm exponent
    history: list[dict] = field(default_factory=list)

    @property
    def mismatch(self) -> float:
        return float(np.max(np.abs(self.eta_learned - self.eta_predicted)))

    @property
    def max_offdiag_cosine(self) -> float:
        off = self.cosines[~np.eye(len(self.cosines), dtype=bool)]
        return float(np.max(np.abs(off))) if off.size else 0.0

    def summary(self) -> dict:
        """Everything as plain JSON-ready values."""
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        out.update(mismatch=self.mismatch, max_offdiag_cosine=self.max_offdiag_cosine)
        return out


class _Problem:
    """Objective and gradient of the UFM over one flat parameter vector. Row i of H enters F with weight ``scale``, or
    ``scale[i]`` when it is an array (a row standing for several samples: ``_ClassProblem``)."""

    def __init__(self, labels, num_classes, dim, lams, loss, scale, bias, weight, classifier_bias=True):
        self.y, self.C, self.d = labels, num_classes, dim
        self.classifier_bias = classifier_bias
        self.n = len(labels)
        self.lam_h, self.lam_w, self.lam_p = lams
        self.loss, self.scale, self.bias, self.weight = get_loss(loss), scale, bias, weight
        self.sizes = [self.n * dim, num_classes * dim, num_classes, num_classes * dim, num_classes]
        self.rows = np.arange(self.n)
        self.starts = np.searchsorted(labels, np.arange(num_classes))
        self._last = (None, None, None)  # (theta, f, g) of the last evaluation, reused by the callback

    def features(self, theta):
        return self.unpack(theta)[0]

    def evaluate(self, theta):
        if self._last[0] is not None and np.array_equal(self._last[0], theta):
            return self._last[1], self._last[2]
        f, g = self(theta)
        self._last = (theta.copy(), f, g)
        return f, g

    def unpack(self, theta):
        parts = np.split(theta, np.cumsum(self.sizes)[:-1])
        return (
            parts[0].reshape(self.n, self.d),
            parts[1].reshape(self.C, self.d),
            parts[2],
            parts[3].reshape(self.C, self.d),
            parts[4],
        )

    def pem_outputs(self, H, V, c):
        return H @ V.T + (c if self.bias else 0.0)

    def __call__(self, theta):
        H, W, b, V, c = self.unpack(theta)
        m = np.broadcast_to(np.asarray(self.scale, dtype=np.float64), (self.n,))[
            :, None
        ]  # each row's weight in F
        log_p = log_softmax(H @ W.T + b, axis=1)
        ce = -(m[:, 0] * log_p[self.rows, self.y]).sum()
        g_logits = np.exp(log_p, out=log_p)  # the softmax, in place of its log: one (n, C) array, not three
        g_logits[self.rows, self.y] -= 1.0
        g_logits *= m
        # the PEM loss touches only each sample's own class: eta_i = v_{y_i} . h_i + c_{y_i}, no (n, C) array
        eta_y = np.einsum("nd,nd->n", H, V[self.y]) + (c[self.y] if self.bias else 0.0)
        pem = self.loss.value(eta_y)
        coef = m[:, 0] * self.weight * self.loss.slope(eta_y)  # m_i * weight * l'(eta_i)
        f = float(m[:, 0] @ (self.weight * pem + 0.5 * self.lam_h * np.sum(H * H, axis=1))) + ce
        f += 0.5 * self.lam_w * (np.sum(W * W) + b @ b) + 0.5 * self.lam_p * (
            np.sum(V * V) + (c @ c if self.bias else 0.0)
        )
        gH = g_logits @ W + coef[:, None] * V[self.y] + self.lam_h * m * H
        gW = g_logits.T @ H + self.lam_w * W
        gb = (
            g_logits.sum(0) + self.lam_w * b if self.classifier_bias else np.zeros_like(b)
        )  # b stays at its initial 0
        gV = self.per_class(coef[:, None] * H) + self.lam_p * V
        gc = self.per_class(coef) + self.lam_p * c if self.bias else np.zeros_like(c)
        return f, np.concatenate([gH.ravel(), gW.ravel(), gb, gV.ravel(), gc])

    def per_class(self, rows):
        """Sums of ``rows`` over each class's samples (labels sorted by class, every class present)."""
        return np.add.reduceat(rows, self.starts, axis=0)


class _ClassProblem(_Problem):
    """The UFM on collapsed features: one row h_c per class weighing s N_c, stored as u_c = sqrt(s N_c) h_c."""

    def __init__(self, counts, dim, lams, loss, scale, bias, weight, classifier_bias=True):
        mass = scale * np.asarray(counts, dtype=np.float64)  # s N_c: class c's weight in F
        super().__init__(
            np.arange(len(counts)), len(counts), dim, lams, loss, mass, bias, weight, classifier_bias
        )
        self.root = np.sqrt(mass)[:, None]

    def features(self, theta):
        return self.unpack(theta)[0] / self.root

    def __call__(self, theta):
        k = self.n * self.d
        unscaled = np.concatenate([self.features(theta).ravel(), theta[k:]])
        f, g = super().__call__(unscaled)
        g[:k] = (g[:k].reshape(self.n, self.d) / self.root).ravel()  # d/du = d/dh / sqrt(s N_c)
        return f, g


MAX_LAM = 1e6


@dataclass(frozen=True)
class UFMSettings:
    """One UFM run (docs/theory.md, the unconstrained feature model): feature ``dim``; the weight decays of the free
    features, the classifier and the PEM (``lam_*``); the PEM's one-way ``loss``; the ``nonlinearity`` on the features
    (relu or none); ``reduction`` of the losses over samples (mean or sum); ``seed``; ``tol`` and ``max_iter`` of
    L-BFGS-B; PEM and classifier ``bias``; ``weight``: the PEM loss's weight; ``features``: "samples" or "classes"."""

    dim: int = 16
    lam_features: float = 5e-4
    lam_classifier: float = 5e-4
    lam_pem: float = 5e-4
    loss: str = "logistic"
    nonlinearity: str = "relu"
    reduction: str = "mean"
    seed: int = 0
    tol: float = 1e-10
    max_iter: int = 20000
    bias: bool = True
    weight: float = 1.0
    classifier_bias: bool = True
    features: str = "samples"


def simulate_ufm(counts, settings: UFMSettings | None = None, progress: bool = False, **changes) -> UFMResult:
    """Train the UFM to a stationary point and compare the learned PEM outputs with Proposition 1.

    Defaults are the run of figure F6 (figures/README.md). ``tol`` bounds the projected gradient
    (L-BFGS-B's pgtol); ``max_iter`` bounds the iterations. ``features``: "samples" (one free
    feature per sample: collapse is measured) or "classes" (one per class, counted N_c times: the
    same stationary points, for many classes; NC1 is 0 by construction). ``changes``: fields of ``settings`` (default
    ``UFMSettings()``) to change, ``simulate_ufm(counts, loss="exp")``.
    """
    unknown = sorted(set(changes) - set(UFMSettings.__dataclass_fields__))
    if unknown:
        raise InputError(
            f"{unknown[0]}: not a UFM setting; choose from {', '.join(UFMSettings.__dataclass_fields__)}"
        )
    st = replace(settings or UFMSettings(), **changes)
    dim, lam_features, lam_classifier, lam_pem, loss = (
        st.dim,
        st.lam_features,
        st.lam_classifier,
        st.lam_pem,
        st.loss,
    )
    nonlinearity, reduction, seed, tol, max_iter = st.nonlinearity, st.reduction, st.seed, st.tol, st.max_iter
    bias, weight, classifier_bias, features = st.bias, st.weight, st.classifier_bias, st.features
    counts = _counts(counts).astype(np.int64)
    check_loss(loss)
    choice("nonlinearity", nonlinearity, NONLINEARITIES)
    choice("reduction", reduction, REDUCTIONS)
    choice("features", features, FEATURE_MODELS)
    dim = positive_int("dim", dim, maximum=100_000)
    seed = nonnegative_int("seed", seed)
    rows = counts.sum() if features == "samples" else len(counts)  # free feature vectors
    if (
        rows * max(dim, len(counts)) > 10**8
    ):  # the features and the (rows, C) logits, 800 MB each at the limit
        raise InputError(
            f"counts, dim: {rows} feature vectors x {max(dim, len(counts))} (dimensions or classes) is beyond the limit "
            f"of 1e8 values"
            + ("; features='classes' keeps one vector per class" if features == "samples" else "")
        )
    lams = tuple(
        as_float_scalar(name, v, positive=True)
        for name, v in (
            ("lam_features", lam_features),
            ("lam_classifier", lam_classifier),
            ("lam_pem", lam_pem),
        )
    )
    for name, lam in zip(("lam_features", "lam_classifier", "lam_pem"), lams):
        if lam > MAX_LAM:  # the penalty's gradient at the start, lam * w, would already leave the float range
            raise InputError(
                f"{name}: {lam!r} is above {MAX_LAM:g}; a weight decay that large holds every parameter at 0"
            )
    tol = as_float_scalar("tol", tol, positive=True)
    max_iter = positive_int("max_iter", max_iter, maximum=10**7)
    weight = as_float_scalar("weight", weight, positive=True)
    for name, flag in (("bias", bias), ("classifier_bias", classifier_bias)):
        if not isinstance(flag, (bool, np.bool_)):
            raise InputError(f"{name}: expected true or false, got {flag!r}")
    config = dict(
        counts=counts.tolist(),
        dim=dim,
        lam_features=lams[0],
        lam_classifier=lams[1],
        lam_pem=lams[2],
        loss=loss,
        nonlinearity=nonlinearity,
        reduction=reduction,
        seed=seed,
        tol=tol,
        max_iter=max_iter,
        bias=bias,
        weight=float(weight),
        classifier_bias=bool(classifier_bias),
        features=features,
    )

    C = len(counts)
    scale = 1.0 / counts.sum() if reduction == "mean" else 1.0
    if features == "samples":
        labels = np.repeat(np.arange(C), counts)
        problem = _Problem(labels, C, dim, lams, loss, scale, bias, float(weight), bool(classifier_bias))
    else:
        labels = np.arange(C)
        problem = _ClassProblem(counts, dim, lams, loss, scale, bias, float(weight), bool(classifier_bias))
    n = len(labels)
    rng = np.random.default_rng(seed)
    H0 = rng.normal(0.0, 1.0, (n, dim))
    if nonlinearity == "relu":
        H0 = np.abs(H0)
    if features == "classes":
        H0 = H0 * problem.root  # stored scaled
    theta0 = np.concatenate(
        [H0.ravel(), 0.1 * rng.normal(size=C * dim), np.zeros(C), 0.1 * rng.normal(size=C * dim), np.zeros(C)]
    )
    bounds = None
    if nonlinearity == "relu":
        bounds = [(0.0, None)] * (n * dim) + [(None, None)] * (len(theta0) - n * dim)

    feats = problem.features

    def measure(theta):
        _, W, b, V, c = problem.unpack(theta)
        H = feats(theta)
        mu = class_means(H, labels, C)
        norm_sq = np.sum(mu * mu, axis=1)
        eta = problem.pem_outputs(H, V, c)
        eta_matrix = class_means(eta, labels, C)
        learned = np.diag(eta_matrix).copy()
        predicted = predicted_priors(counts, lams[2], norm_sq, reduction, loss, bias, weight)
        return mu, norm_sq, eta_matrix, learned, predicted

    def projected_grad_norm(theta, g):
        if bounds is not None:  # at an active bound a positive gradient points outside: it does not count
            g = g.copy()
            at_bound = np.zeros_like(g, dtype=bool)
            at_bound[: n * dim] = (theta[: n * dim] <= 0.0) & (g[: n * dim] > 0.0)
            g[at_bound] = 0.0
        return float(np.linalg.norm(g))

    history: list[dict] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=max_iter, desc="UFM (L-BFGS-B)", disable=not progress, leave=False)

    def record(theta, iteration):
        f, g = problem.evaluate(theta)
        _, _, _, learned, predicted = measure(theta)
        history.append(
            dict(
                iteration=iteration,
                objective=float(f),
                grad_norm=projected_grad_norm(theta, g),
                nc1=nc1(feats(theta), labels, C),
                mismatch=float(np.max(np.abs(learned - predicted))),
            )
        )

    iterations = 0

    def callback(intermediate_result):
        nonlocal iterations
        iterations += 1
        if _kept(iterations):
            record(intermediate_result.x, iterations)
        bar.update(1)

    start = time.perf_counter()
    # One BLAS thread: the products here are small, and OpenBLAS's threads cost 4x more than they save.
    with threadpool_limits(limits=1):
        res = minimize(
            problem.evaluate,
            theta0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=callback,
            options=dict(maxiter=max_iter, maxfun=4 * max_iter, gtol=tol, ftol=0.0, maxcor=MAXCOR),
        )
    seconds = time.perf_counter() - start
    bar.close()
    if iterations and (not history or history[-1]["iteration"] != iterations):
        record(res.x, iterations)  # the last iteration is always in the history
    f, g = problem.evaluate(res.x)
    _, W, b, V, c = problem.unpack(res.x)
    H = feats(res.x)
    mu, norm_sq, eta_matrix, learned, predicted = measure(res.x)
    geometry = classifier_alignment(W, mu, counts)
    geometry["norm_sq_exponent"] = (
        loglog_slope(norm_sq, counts) if np.ptp(counts) > 0 and np.all(norm_sq > 0) else None
    )
    return UFMResult(
        counts=counts,
        eta_learned=learned,
        eta_predicted=predicted,
        mean_norm_sq=norm_sq,
        eta_matrix=eta_matrix,
        cosines=cosine_matrix(mu),
        nc1=nc1(H, labels, C),
        grad_norm=projected_grad_norm(res.x, g),
        objective=float(f),
        iterations=int(res.nit),
        seconds=seconds,
        message=str(res.message),
        config=config,
        geometry=geometry,
        history=history,
        class_mean_vectors=mu,
        classifier=W,
        classifier_bias_values=b,
        pem_weight=V,
        pem_bias=c if bias else np.zeros(C),
    )
