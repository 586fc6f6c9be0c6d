"""Scaling-law fits: the compute convention, L(x) = E + A x^-alpha and Chinchilla's L(N, D).

Both laws are fitted the way Hoffmann et al. (2022) and Besiroglu et al. (2024) fit L(N, D): in log
space, log L-hat = logsumexp(a - alpha log x, ..., e) with A = exp(a) and E = exp(e), minimising the
Huber loss (delta 1e-3) of log L-hat - log L with L-BFGS-B from a grid of starting points and keeping
the best; confidence intervals come from refitting on points resampled with replacement (seeded).
Pure numerics over arrays of floats: no ledger, no plotting, no torch. `ablab.analysis.scaling` re-exports all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from ablab.errors import UserError

CONVENTIONS = ("6ND", "6ND+attn")
HUBER_DELTA = 1e-3
# Hoffmann et al.'s grid of initialisations as Besiroglu et al. (2024) list it: 4,500 starts, in the
# parameter order (a, b, e, alpha, beta) that `fit_chinchilla` optimises.
CHINCHILLA_GRID = tuple(itertools.product(
    (0.0, 5.0, 10.0, 15.0, 20.0, 25.0), (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    (-1.0, -0.5, 0.0, 0.5, 1.0), (0.0, 0.5, 1.0, 1.5, 2.0), (0.0, 0.5, 1.0, 1.5, 2.0)))

Values = Sequence[float] | np.ndarray


def compute(n_params, tokens, convention: str = "6ND", n_layers: int | None = None,
            d_model: int | None = None, seq_len: int | None = None):
    """Training FLOPs: "6ND" is C = 6 N D; "6ND+attn" adds attention's 12 n_layers d_model seq_len
    FLOPs per token (PaLM, nanoGPT). Whether N counts embeddings is the caller's choice."""
    if convention not in CONVENTIONS:
        raise UserError(f"Unknown compute convention {convention!r}; use one of {', '.join(CONVENTIONS)}.")
    n, d = np.asarray(n_params, dtype=float), np.asarray(tokens, dtype=float)
    if convention == "6ND":
        flops = 6 * n * d
    else:
        if n_layers is None or d_model is None or seq_len is None:
            raise UserError("The 6ND+attn convention needs n_layers, d_model and seq_len; pass all three "
                            "or use convention='6ND'.")
        flops = (6 * n + 12 * n_layers * d_model * seq_len) * d
    return float(flops) if flops.ndim == 0 else flops


def _positive(values: Values, name: str, fix: str = "remove runs without a loss or a size") -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise UserError(f"{name} must be positive finite numbers; {fix}.")
    return array


def _check_lengths(*arrays: np.ndarray) -> None:
    if len({a.size for a in arrays}) != 1:
        sizes = ", ".join(str(a.size) for a in arrays)
        raise UserError(f"The inputs have different lengths ({sizes}); pass one value per run to each.")


def _huber_log_objective(theta: np.ndarray, log_x: np.ndarray, log_loss: np.ndarray,
                         delta: float) -> tuple[float, np.ndarray]:
    """Sum of Huber(log L-hat - log L) and its gradient for theta = (coefficients..., e, exponents...)."""
    k = log_x.shape[1]
    terms = np.empty((log_x.shape[0], k + 1))
    np.subtract(theta[:k], log_x * theta[k + 1:], out=terms[:, :k])
    terms[:, k] = theta[k]
    top = terms.max(axis=1)
    shifted = np.exp(terms - top[:, None])
    total = shifted.sum(axis=1)
    residual = top + np.log(total) - log_loss
    # Clipping the residual at +-delta gives both Huber branches at once: r^2/2 inside, delta(|r| - delta/2) outside.
    clipped = np.clip(residual, -delta, delta)
    value = float(np.dot(clipped, residual - 0.5 * clipped))
    weights = shifted * (clipped / total)[:, None]  # softmax of the terms times dHuber/dr
    grad = np.empty(2 * k + 1)
    grad[:k + 1] = weights.sum(axis=0)
    grad[k + 1:] = -np.einsum("ij,ij->j", weights[:, :k], log_x)
    return value, grad


def _one_blas_thread():
    # L-BFGS-B makes thousands of tiny BLAS calls; with OpenBLAS threads on a busy 2-core machine each
    # costs ~100x more (measured: 73 s against 11 s for the 4,500-start grid).
    return threadpool_limits(1, user_api="blas")


def _multistart(log_x: np.ndarray, log_loss: np.ndarray, starts: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS-B from every start (exponents kept >= 0); returns the end points and their objectives."""
    k = log_x.shape[1]
    bounds = [(None, None)] * (k + 1) + [(0.0, None)] * k

    # In units of delta the gradient is O(1), so L-BFGS-B's default gtol means converged; on the raw
    # scale (gradients ~1e-3) it stops a power-law fit at alpha 0.24 where the optimum is 0.20.
    def in_delta_units(theta):
        value, grad = _huber_log_objective(theta, log_x, log_loss, HUBER_DELTA)
        return value / HUBER_DELTA, grad / HUBER_DELTA

    ends, objectives = [], []
    for start in starts:
        result = optimize.minimize(in_delta_units, np.asarray(start, dtype=float), jac=True, method="L-BFGS-B",
                                   bounds=bounds)
        ends.append(result.x)
        objectives.append(result.fun * HUBER_DELTA if np.isfinite(result.fun) else math.inf)
    return np.array(ends), np.array(objectives)


def _bootstrap(log_x: np.ndarray, log_loss: np.ndarray, starts: Sequence, n_boot: int,
               seed: int) -> np.ndarray:
    """Refits on points resampled with replacement; resamples with fewer distinct points than free
    parameters cannot pin the law down and are drawn again (at most 20 n_boot draws in all)."""
    rng = np.random.default_rng(seed)
    n_points, n_free = log_loss.size, 2 * log_x.shape[1] + 1
    fits = []
    for _ in range(20 * n_boot):
        if len(fits) == n_boot:
            break
        rows = rng.integers(0, n_points, n_points)
        if np.unique(rows).size < n_free:
            continue
        ends, objectives = _multistart(log_x[rows], log_loss[rows], starts)
        fits.append(ends[np.argmin(objectives)])
    return np.array(fits).reshape(-1, n_free)


def _refit_starts(starts: Sequence, objectives: np.ndarray, best: np.ndarray, n_others: int) -> list:
    # The best solution, and the grid points whose runs ended lowest, so that a resample whose optimum
    # sits in another basin can still reach it without rerunning the whole grid.
    return [best] + [np.asarray(starts[i], dtype=float) for i in np.argsort(objectives)[:n_others]]


def percentile_interval(samples: Values, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval, each end an actual sample, so infinite samples stay meaningful."""
    x = np.asarray(samples, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(x, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def _json(value):
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json(item) for item in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


@dataclass(frozen=True)
class PowerLawFit:
    """L(x) = E + A x^-alpha, with x named by `name` ("C", "N", "tokens")."""

    name: str
    E: float
    A: float
    alpha: float
    E_ci: tuple[float, float]  # bootstrap percentile intervals at `confidence`
    A_ci: tuple[float, float]
    alpha_ci: tuple[float, float]
    x_min: float  # the fitted range of x
    x_max: float
    n_points: int
    objective: float  # summed Huber loss of the log residuals at the fit
    convention: str  # compute convention of x when x is compute; recorded either way
    embeddings: bool  # whether parameter counts behind x include embeddings
    n_boot: int  # bootstrap refits that succeeded
    seed: int
    confidence: float
    huber_delta: float = HUBER_DELTA
    boot: list[list[float]] = field(default_factory=list, repr=False)  # (E, A, alpha) per bootstrap refit

    def predict(self, x):
        """The law's loss at x (scalar or array)."""
        loss = self.E + self.A * np.asarray(x, dtype=float) ** -self.alpha
        return float(loss) if np.ndim(loss) == 0 else loss

    def inverse(self, loss):
        """The x at which the law reaches `loss`; NaN where loss <= E, which no x reaches."""
        return _inverse(self.E, self.A, self.alpha, loss)

    def to_dict(self) -> dict:
        return _json(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> PowerLawFit:
        """The fit back from `to_dict()` output, as stored in the ledger (unknown keys ignored)."""
        return _from_dict(cls, data)


def _from_dict(cls, data: dict):
    names = cls.__dataclass_fields__
    return cls(**{key: tuple(value) if key.endswith(("_ci", "_range")) else value
                  for key, value in data.items() if key in names})


def _inverse(E, A, alpha, loss):
    excess = np.asarray(loss, dtype=float) - E
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where((excess > 0) & (alpha > 0), (A / np.where(excess > 0, excess, 1.0)) ** (1 / alpha), np.nan)
    return float(x) if x.ndim == 0 else x


def _power_law_starts(log_x: np.ndarray, loss: np.ndarray) -> list:
    # E at a few fractions of the lowest loss, alpha over a plausible range, and a chosen so the
    # curve passes through the point with the smallest x.
    anchor = np.argmin(log_x)
    starts = []
    for fraction, alpha in itertools.product((0.01, 0.5, 0.8, 0.95), (0.05, 0.15, 0.3, 0.6, 1.0)):
        e = fraction * loss.min()
        excess = max(loss[anchor] - e, 0.01 * loss[anchor])
        starts.append((math.log(excess) + alpha * log_x[anchor], math.log(e), alpha))
    return starts


def fit_power_law(x: Values, loss: Values, name: str = "C", convention: str = "6ND", embeddings: bool = False,
                  n_boot: int = 200, seed: int = 0, confidence: float = 0.95) -> PowerLawFit:
    """Fit L(x) = E + A x^-alpha in log space (Huber, L-BFGS-B from 20 starts), with bootstrap
    intervals from `n_boot` resampled refits (each from the best solution and the 3 grid points whose
    runs ended lowest); for L(C), L(N) and training curves L(tokens)."""
    xs, losses = _positive(x, name), _positive(loss, "loss")
    _check_lengths(xs, losses)
    if convention not in CONVENTIONS:
        raise UserError(f"Unknown compute convention {convention!r}; use one of {', '.join(CONVENTIONS)}.")
    if xs.size < 4 or np.unique(xs).size < 3:
        raise UserError(f"A power law in {name} needs at least 4 (x, loss) points at 3 or more distinct x to fit "
                        "3 parameters; add runs (e.g. with `ablab ladder`).")
    log_x, log_loss = np.log(xs)[:, None], np.log(losses)
    starts = _power_law_starts(log_x[:, 0], losses)
    with _one_blas_thread():
        ends, objectives = _multistart(log_x, log_loss, starts)
        best = ends[np.argmin(objectives)]
        boot = _bootstrap(log_x, log_loss, _refit_starts(starts, objectives, best, 3), n_boot, seed)
    natural = np.column_stack([np.exp(boot[:, 1]), np.exp(boot[:, 0]), boot[:, 2]])
    E_ci, A_ci, alpha_ci = (percentile_interval(natural[:, i], confidence) for i in range(3))
    return PowerLawFit(name=name, E=math.exp(best[1]), A=math.exp(best[0]), alpha=float(best[2]),
                       E_ci=E_ci, A_ci=A_ci, alpha_ci=alpha_ci, x_min=float(xs.min()), x_max=float(xs.max()),
                       n_points=int(xs.size), objective=float(objectives.min()), convention=convention,
                       embeddings=embeddings, n_boot=len(boot), seed=seed, confidence=confidence,
                       boot=natural.tolist())


@dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, approach 3)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    E_ci: tuple[float, float]  # bootstrap percentile intervals at `confidence`
    A_ci: tuple[float, float]
    B_ci: tuple[float, float]
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    n_exponent_ci: tuple[float, float]  # of beta / (alpha + beta), the exponent of N*(C)
    n_range: tuple[float, float]  # the fitted ranges of N and D
    d_range: tuple[float, float]
    n_points: int
    objective: float  # summed Huber loss of the log residuals at the fit
    n_starts: int  # L-BFGS-B starts of the full fit
    embeddings: bool  # whether N includes embedding parameters
    n_boot: int  # bootstrap refits that succeeded
    seed: int
    confidence: float
    convention: str = "6ND"  # the compute convention `optimal_allocation` assumes
    huber_delta: float = HUBER_DELTA
    boot: list[list[float]] = field(default_factory=list, repr=False)  # (E, A, B, alpha, beta) per refit

    def predict(self, n_params, tokens):
        loss = (self.E + self.A * np.asarray(n_params, dtype=float) ** -self.alpha
                + self.B * np.asarray(tokens, dtype=float) ** -self.beta)
        return float(loss) if np.ndim(loss) == 0 else loss

    @property
    def n_exponent(self) -> float:
        """a in N*(C) proportional to C^a: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def d_exponent(self) -> float:
        """b in D*(C) proportional to C^b: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def optimal_allocation(self, compute):
        """(N*, D*) minimising the law at compute C = 6 N D: N* = G (C/6)^a, D* = (C/6)^b / G."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        per_six = np.asarray(compute, dtype=float) / 6
        n_opt, d_opt = g * per_six ** self.n_exponent, per_six ** self.d_exponent / g
        return (float(n_opt), float(d_opt)) if n_opt.ndim == 0 else (n_opt, d_opt)

    def to_dict(self) -> dict:
        return _json(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> ChinchillaFit:
        """The fit back from `to_dict()` output, as stored in the ledger (unknown keys ignored)."""
        return _from_dict(cls, data)


def fit_chinchilla(n_params: Values, tokens: Values, loss: Values, embeddings: bool = False,
                   grid: Sequence | None = None, n_boot: int = 100, boot_starts: int = 4, seed: int = 0,
                   confidence: float = 0.95) -> ChinchillaFit:
    """Fit L(N, D) as Besiroglu et al. (2024) do: Huber (delta 1e-3) on log L, L-BFGS-B from every
    start of `grid` (default: the 4,500-point CHINCHILLA_GRID), best kept. Each of the `n_boot`
    bootstrap refits starts from the best solution and the `boot_starts` grid points whose runs ended lowest."""
    n, d, losses = _positive(n_params, "n_params"), _positive(tokens, "tokens"), _positive(loss, "loss")
    _check_lengths(n, d, losses)
    if losses.size < 6:
        raise UserError(f"A Chinchilla fit needs at least 6 (N, D, loss) points to fit 5 parameters; got "
                        f"{losses.size}; add runs (e.g. with `ablab ladder`).")
    if np.unique(n).size < 3 or np.unique(d).size < 3:  # else A, alpha (or B, beta) and E trade off freely
        raise UserError(f"A Chinchilla fit needs at least 3 distinct sizes N and 3 distinct token counts D; got "
                        f"{np.unique(n).size} and {np.unique(d).size}; add runs of other sizes and budgets.")
    log_x, log_loss = np.column_stack([np.log(n), np.log(d)]), np.log(losses)
    starts = CHINCHILLA_GRID if grid is None else grid
    with _one_blas_thread():
        ends, objectives = _multistart(log_x, log_loss, starts)
        best = ends[np.argmin(objectives)]
        boot = _bootstrap(log_x, log_loss, _refit_starts(starts, objectives, best, boot_starts), n_boot, seed)
    # Columns of `boot` are (a, b, e, alpha, beta); the fit reports (E, A, B, alpha, beta).
    natural = np.column_stack([np.exp(boot[:, 2]), np.exp(boot[:, 0]), np.exp(boot[:, 1]), boot[:, 3], boot[:, 4]])
    with np.errstate(invalid="ignore"):
        n_exponents = natural[:, 4] / (natural[:, 3] + natural[:, 4])
    cis = [percentile_interval(natural[:, i], confidence) for i in range(5)]
    return ChinchillaFit(
        E=math.exp(best[2]), A=math.exp(best[0]), B=math.exp(best[1]), alpha=float(best[3]), beta=float(best[4]),
        E_ci=cis[0], A_ci=cis[1], B_ci=cis[2], alpha_ci=cis[3], beta_ci=cis[4],
        n_exponent_ci=percentile_interval(n_exponents, confidence),
        n_range=(float(n.min()), float(n.max())), d_range=(float(d.min()), float(d.max())),
        n_points=int(losses.size), objective=float(objectives.min()), n_starts=len(starts),
        embeddings=embeddings, n_boot=len(boot), seed=seed, confidence=confidence, boot=natural.tolist())
