"""Batched L2-regularised logistic regression: many problems in the same torch matrix products.

Minimises, for every problem p (a cross-validation fold, or the whole training set), the objective
of scikit-learn's ``LogisticRegression(C=C)`` (l2 penalty, ``fit_intercept=True``), the intercept b
not penalised:

* multinomial: f_p(W, b) = ½‖W‖² + C Σ_i s_ip · CE(softmax(x_i W + b), y_i);
* binary, one per label column k (``ovr``, multi-label sets):
  f_p = ½‖W‖² + C Σ_i Σ_k s_ip m_ik · log(1 + exp(-ỹ_ik (x_i w_k + b_k))), ỹ = ±1, m = 0 for -1 labels.

``s_ip`` says which rows belong to problem p. All problems share one X: its rows are grouped by
the problems they belong to (k groups for k folds), and each group meets the weights of its
problems in one product, so no work is spent on a fold's held-out rows. Like scikit-learn, a
problem models only the classes it has rows of (the others get logits -inf), and a multi-class
problem of exactly two classes is the binary one (one weight vector w; logits ∓z/2, whose softmax
is the sigmoid); a label column with no positive or no negative row has no finite optimum and
stays at zero.

Method: full-batch L-BFGS (``memory`` pairs, scipy's default 10) for all problems at once, in
preconditioned coordinates (:class:`BatchedLogisticRegression`). One iteration costs one product
X·d and one Xᵀ·R per row group; the backtracking (Armijo) line search reuses X·d, so trial steps
are elementwise only; the first step of a fit is the 1-D Newton step along -∇f. Products and the
L-BFGS history run in ``dtype`` (float32 by default: twice as fast as float64 on a CPU); parameters,
logits, losses and gradients stay in float64, so the line search compares values of one consistent
function. Stopping rule: scikit-learn's (scipy's ``gtol``): every entry of ∇f_p / (C·n_p), the
gradient of the mean loss + ‖W‖²/(2C·n_p), is at most ``tol`` (n_p: the problem's labelled rows,
per column for ``ovr``); a line search that can no longer decrease f also stops its problem
(reported as not converged when the rule is not met). Problems that stopped drop out.
"""

from __future__ import annotations

import numpy as np
import torch

LOSSES = ("multinomial", "ovr")
# The preconditioner's curvature δ, as a share of the loss's mean curvature at the starting point:
# the curvature falls as a fit converges (its predictions grow confident); a third of the starting
# value took fewer iterations than the full value along the C grid of benchmarks/probe_speed.py,
# on its problem and on the digits features (tried while writing this module: 1, 1/3, 1/10).
CURVATURE_SHARE = 1 / 3


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-problem inner products of (A, D', K) tensors."""
    return (a * b).sum((1, 2))


class _Problems:
    """Row weights, targets and masks of the active problems (the data of f, without parameters)."""

    def __init__(self, T: torch.Tensor, S: torch.Tensor, C: torch.Tensor, loss: str, M: torch.Tensor | None):
        self.T, self.loss = T, loss  # T (N, K) float64: one-hot (multinomial) or 0/1 (ovr)
        self.C = C  # (A,)
        if loss == "multinomial":
            self.E = S  # (N, A)
            self.present = (S.T @ T) > 0  # (A, K): classes with rows in the problem
            n = S.sum(0)[:, None].expand(-1, T.shape[1])
        else:
            E = S[:, :, None] * M[:, None, :]  # (N, A, K): labelled rows of each column
            pos, n = (E * T[:, None, :]).sum(0), E.sum(0)
            self.present = (pos > 0) & (pos < n)  # both signs: a finite optimum exists
            self.E = E * self.present[None]
            n = n * self.present
        self.scale = (C[:, None] * n).clamp_min(1e-300)  # (A, K): C·n_p, the gradient's scale

    def subset(self, keep: torch.Tensor) -> None:
        self.C, self.present, self.scale = self.C[keep], self.present[keep], self.scale[keep]
        self.E = self.E[:, keep]

    def _masked(self, Z: torch.Tensor) -> torch.Tensor:
        """Logits with the classes a problem has no rows of at -inf (left out of its softmax)."""
        return Z if bool(self.present.all()) else Z.masked_fill(~self.present[None], -torch.inf)

    def loss_value(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Σ_i weight · loss per problem (A,) at logits Z (N, A, K), and what :meth:`residual` can
        reuse at the same Z (the log-sum-exp of a multinomial problem)."""
        if self.loss == "multinomial":
            lse = torch.logsumexp(self._masked(Z), -1)
            ce = lse - (Z * self.T[:, None, :]).sum(-1)  # inf only on rows outside the problem
            return (self.E * torch.where(self.E > 0, ce, 0.0)).sum(0), lse
        margins = Z * (2 * self.T[:, None, :] - 1)
        return (self.E * torch.nn.functional.softplus(-margins)).sum((0, 2)), None

    def residual(self, Z: torch.Tensor, lse: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """C · ∂(Σ weight · loss)/∂Z (N, A, K), in ``dtype`` (it only feeds the product Xᵀ·R)."""
        if self.loss == "multinomial":
            P = torch.exp(self._masked(Z) - lse[:, :, None])
            R = self.E[:, :, None] * (P - self.T[:, None, :])
        else:
            R = self.E * (torch.sigmoid(Z) - self.T[:, None, :])
        return (R * self.C[None, :, None]).to(dtype)

    def mean_curvature(self, Z: torch.Tensor) -> float:
        """The loss's mean second derivative per logit, p(1 - p), over the rows and classes in play."""
        if self.loss == "multinomial":
            P = torch.softmax(self._masked(Z), -1)
            E = self.E[:, :, None] * self.present[None]
        else:
            P, E = torch.sigmoid(Z), self.E
        return float((E * P * (1 - P)).sum() / E.sum().clamp_min(1e-300))

    def curvature(self, Z: torch.Tensor, XD: torch.Tensor) -> torch.Tensor:
        """Second derivative of Σ weight · loss along the logit direction XD (A,)."""
        if self.loss == "multinomial":
            P = torch.softmax(self._masked(Z), -1)
            mean = (P * XD).sum(-1)
            return (self.E * ((P * XD * XD).sum(-1) - mean * mean)).sum(0)
        p = torch.sigmoid(Z)
        return (self.E * p * (1 - p) * XD * XD).sum((0, 2))


def row_groups(S: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int, torch.Tensor]]]:
    """Rows ordered by the set of problems they belong to (``S > 0``): (order, groups), each group
    ``(start, stop, member)`` a run of ordered rows and the (P,) mask of its problems. Rows in no
    problem are in no group. With k folds there are k groups, each in k-1 problems."""
    member = S > 0
    patterns, inverse = torch.unique(member, dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    ends = torch.cumsum(torch.bincount(inverse, minlength=len(patterns)), 0).tolist()
    starts = [0, *ends[:-1]]
    return order, [(a, b, patterns[g]) for g, (a, b) in enumerate(zip(starts, ends)) if bool(patterns[g].any())]


def _max_abs_within(G: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """Per problem: is every |G[:, j, k]| at most ``limit[:, k]``? The default stopping test."""
    return (G.abs().amax(1) <= limit).all(1)


def fit(X: torch.Tensor, T: torch.Tensor, S: torch.Tensor, C, *, loss: str = "multinomial",
        label_mask: torch.Tensor | None = None, W0: torch.Tensor | None = None, tol: float = 1e-4,
        max_iter: int = 1000, memory: int = 10, penalty: torch.Tensor | None = None,
        stop_test=_max_abs_within) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve every problem (column of ``S``) at once.

    ``X`` (N, D+1): features with a last column of ones (the intercept), in the product dtype;
    ``T`` (N, K) float64 targets (one-hot for ``multinomial``, 0/1 for ``ovr``); ``S`` (N, P) row
    weights (0: not in that problem); ``C`` a number or (P,); ``label_mask`` (N, K), ``ovr`` only:
    0 where a label is ignored; ``W0`` (P, D+1, K) warm start (last row: intercepts); ``penalty``
    (D+1,): the weights λ_j of the penalty ½ Σ_j λ_j ‖W_j‖² (default 1, and 0 for the intercept row);
    ``stop_test(G, limit)``: per problem, whether the gradient G (A, D+1, K) has no entry above
    ``limit`` (A, K) in its column, read in the coordinates the stopping rule uses (after a change
    of variables, as :class:`BatchedLogisticRegression` makes). Rows are processed grouped by the
    problems they belong to (:func:`row_groups`; X is reordered, a copy, unless already grouped), so
    no product is spent on a row outside a problem.
    Returns (W (P, D+1, K) float64, iterations (P,), converged (P,) bool)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    dev, f64 = X.device, torch.float64
    n, d1 = X.shape
    k = T.shape[1]
    p = S.shape[1]
    T, S = T.to(dev, f64), S.to(dev, f64)
    M = torch.ones_like(T) if label_mask is None else label_mask.to(dev, f64)
    order, groups = row_groups(S)
    if not bool((order == torch.arange(n, device=order.device)).all()):
        X, T, S, M = X[order], T[order], S[order], M[order]
    Cv = torch.as_tensor(C, dtype=f64, device=dev).reshape(-1).expand(p).clone()
    prob = _Problems(T, S, Cv, loss, M)
    W = torch.zeros(p, d1, k, dtype=f64, device=dev) if W0 is None else W0.to(dev, f64).clone()
    W = W * prob.present[:, None, :]  # absent classes / degenerate columns sit at zero
    out_W, out_it = W.clone(), torch.zeros(p, dtype=torch.long, device=dev)
    out_ok = torch.zeros(p, dtype=torch.bool, device=dev)
    if penalty is None:
        penalised = torch.ones(1, d1, 1, dtype=f64, device=dev)
        penalised[0, -1, 0] = 0.0  # the intercept row is not penalised
    else:
        penalised = penalty.to(dev, f64).reshape(1, d1, 1)

    def blocks():
        """(rows, positions among the active problems) of each row group still in play."""
        for a, b, member in groups:
            cols = member[st["active"]].nonzero().squeeze(1)
            if len(cols):
                yield slice(a, b), cols

    def product(A: torch.Tensor) -> torch.Tensor:  # (a, D+1, K) -> X·A (N, a, K), 0 outside each problem
        out = torch.zeros(n, A.shape[0], k, dtype=f64, device=dev)
        Ax = A.to(X.dtype)
        for rows, cols in blocks():
            Wg = Ax[cols].permute(1, 0, 2).reshape(d1, len(cols) * k)
            out[rows, cols] = (X[rows] @ Wg).to(f64).reshape(-1, len(cols), k)
        return out

    def gradient(W: torch.Tensor, Z: torch.Tensor, lse: torch.Tensor | None) -> torch.Tensor:
        R = prob.residual(Z, lse, X.dtype)
        G = W * penalised
        for rows, cols in blocks():
            Rg = R[rows][:, cols].reshape(-1, len(cols) * k)
            G[cols] += (X[rows].T @ Rg).to(f64).reshape(d1, len(cols), k).permute(1, 0, 2)
        return G

    def objective(W: torch.Tensor, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        value, lse = prob.loss_value(Z)
        return 0.5 * _dot(W * penalised, W) + prob.C * value, lse

    hd = X.dtype  # the L-BFGS history and two-loop recursion: memory-bound, so in the product dtype
    st = {"active": torch.arange(p, device=dev), "it": torch.zeros(p, dtype=torch.long, device=dev),
          "gamma": torch.ones(p, dtype=f64, device=dev), "hist": []}  # hist: (s, y, rho); rho 0 = pair skipped
    st["W"] = W
    st["Z"] = product(W)
    st["f"], lse = objective(W, st["Z"])
    st["G"] = gradient(W, st["Z"], lse)

    def converged(G: torch.Tensor) -> torch.Tensor:
        return stop_test(G, tol * prob.scale)

    def retire(stop: torch.Tensor, ok: torch.Tensor) -> bool:
        """Write out the problems in ``stop``; drop them from the state. False when none is left."""
        idx = st["active"][stop]
        out_W[idx], out_it[idx], out_ok[idx] = st["W"][stop], st["it"][stop], ok[stop]
        keep = ~stop
        for key in ("active", "it", "gamma", "W", "f", "G"):
            st[key] = st[key][keep]
        st["Z"] = st["Z"][:, keep]
        st["hist"] = [(s[keep], y[keep], r[keep]) for s, y, r in st["hist"]]
        prob.subset(keep)
        return bool(keep.any())

    for _ in range(max_iter + 1):
        done = converged(st["G"])
        stop = done | (st["it"] >= max_iter)
        if bool(stop.any()) and not retire(stop, done):
            break
        W, Z, f, G, hist = st["W"], st["Z"], st["f"], st["G"], st["hist"]
        # direction: L-BFGS two-loop recursion (steepest descent with no history)
        q = -G.to(hd)
        alphas = []
        for s, y, rho in reversed(hist):
            a = rho * _dot(s, q)
            q = q - a[:, None, None] * y
            alphas.append(a)
        q = q * st["gamma"].to(hd)[:, None, None]
        for (s, y, rho), a in zip(hist, reversed(alphas)):
            q = q + (a - rho * _dot(y, q))[:, None, None] * s
        q = q.to(f64)
        gd = _dot(G, q)
        bad = gd >= 0  # not a descent direction (rounding in the history): restart from -∇f
        if bool(bad.any()):
            q = torch.where(bad[:, None, None], -G, q)
            gd = _dot(G, q)
        XD = product(q)
        if hist:
            t = torch.ones_like(f)
        else:  # first step: the 1-D Newton step along the direction
            curv = _dot(q * penalised, q) + prob.C * prob.curvature(Z, XD)
            t = (-gd / curv.clamp_min(1e-300)).clamp_max(1e6)
        # backtracking (Armijo) on the exact objective; the penalty is a quadratic in t
        ww, wq, qq = _dot(W * penalised, W), _dot(W * penalised, q), _dot(q * penalised, q)
        pending = torch.ones_like(f, dtype=torch.bool)
        f_new, lse_new = f.clone(), None
        for _ in range(60):
            value, lse = prob.loss_value(Z + t[None, :, None] * XD)
            ft = 0.5 * (ww + 2 * t * wq + t * t * qq) + prob.C * value
            ok = pending & (ft <= f + 1e-4 * t * gd)
            f_new = torch.where(ok, ft, f_new)
            if lse is not None:
                lse_new = lse if lse_new is None else torch.where(ok[None, :], lse, lse_new)
            pending = pending & ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, t * 0.5, t)
        stuck = pending | ~(f_new < f)  # no decrease left: f is at its floating-point minimum
        t = torch.where(stuck, torch.zeros_like(t), t)
        S_step = t[:, None, None] * q
        st["W"] = W + S_step
        st["Z"] = Z + t[None, :, None] * XD
        if lse_new is not None and bool(stuck.any()):  # a stuck problem keeps Z: its lse is that of t = 0
            lse_new = torch.where(stuck[None, :], prob.loss_value(Z)[1], lse_new)
        G_new = gradient(st["W"], st["Z"], lse_new)
        Y_step = G_new - G
        sy, yy = _dot(S_step, Y_step), _dot(Y_step, Y_step)
        valid = sy > 1e-10 * torch.sqrt(_dot(S_step, S_step) * yy)
        rho = torch.where(valid, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy))
        st["gamma"] = torch.where(valid, sy / yy.clamp_min(1e-300), st["gamma"])
        hist.append((S_step.to(hd), Y_step.to(hd), rho.to(hd)))
        if len(hist) > memory:
            hist.pop(0)
        st["f"], st["G"] = torch.where(stuck, f, f_new), G_new
        st["it"] = st["it"] + 1
        if bool(stuck.any()) and not retire(stuck, converged(G_new)):  # stopped by the line search
            break
    return out_W, out_it, out_ok


class Basis:
    """Training features in the solver's coordinates, made once per training set
    (:meth:`BatchedLogisticRegression.prepare`): centred on their mean ``mu`` and rotated onto the
    eigenvectors ``V`` (D, r) of the centred scatter matrix that can have a nonzero eigenvalue
    (``lam``; r = min(N - 1, D)): ``R = (X - mu) V``."""

    def __init__(self, R: torch.Tensor, V: torch.Tensor, mu: torch.Tensor, lam: torch.Tensor):
        self.R, self.V, self.mu, self.lam = R, V, mu, lam

    def __len__(self) -> int:
        return self.R.shape[0]


class BatchedLogisticRegression:
    """Logistic regression on numpy labels: ``fit`` solves one problem per column of ``rows`` (all
    training rows by default); ``decision_function`` gives the logits (N, K) of one problem.

    Labels: class ids (N,) for ``multinomial`` (``n_classes`` outputs); (N, K) in {1, 0, -1 (ignored)}
    for ``ovr``. A multinomial fit whose rows hold exactly two classes is solved as the binary
    problem (as scikit-learn does). Classes without training rows score -inf.

    Conditioning. On L2-normalised CNN features the objective is badly conditioned: the features
    share a large mean (which trades off against the intercept) and a few directions of large
    variance, so with C in the hundreds plain L-BFGS needs hundreds of iterations. The solver works
    in exact new coordinates instead: features centred (the intercept absorbs the mean:
    b' = b + mu·W) and rotated onto the eigenvectors V of their scatter matrix (eigenvalues λ_j),
    each direction scaled by d_j = (1 + C δ λ_j)^(-1/2) and the intercept by (1 + C δ n)^(-1/2), δ a
    share (``CURVATURE_SHARE``) of the loss's mean curvature p(1-p) at the start: W = V diag(d) U.
    The penalty becomes ½ Σ_j d_j² ‖U_j‖², the optimum is the same W and b, and the Hessian is much
    closer to the identity in U, so L-BFGS needs several times fewer iterations. The
    stopping test maps the gradient back to W and b, so the rule is scikit-learn's.
    """

    def __init__(self, loss: str = "multinomial", tol: float = 1e-4, max_iter: int = 1000, memory: int = 10,
                 device: str = "cpu", dtype: torch.dtype = torch.float32):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss, self.tol, self.max_iter, self.memory = loss, float(tol), int(max_iter), int(memory)
        self.device, self.dtype = device, dtype
        self.coef: torch.Tensor | None = None  # (P, D+1, K) float64, last row: intercepts
        self.n_iter: np.ndarray | None = None
        self.converged: np.ndarray | None = None
        self.binary: tuple[int, int, int] | None = None  # (class -z/2, class +z/2, outputs) of a 2-class fit
        self.present: np.ndarray | None = None  # (P, K) classes each multinomial problem has rows of

    def prepare(self, X: np.ndarray) -> Basis:
        """The training features in the solver's coordinates; reuse it across fits of the same rows
        (cross-validation folds, the C path, the final fit)."""
        X = torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.device)
        mu = X.to(torch.float64).mean(0)
        Xc = X - mu.to(self.dtype)
        scatter = (Xc.T @ Xc).to(torch.float64)
        if scatter.device.type == "cpu":  # LAPACK through numpy: far faster than torch's float64 eigh on CPU
            lam_np, V_np = np.linalg.eigh(scatter.numpy())
            lam, V = torch.as_tensor(lam_np), torch.as_tensor(V_np)
        else:
            lam, V = torch.linalg.eigh(scatter)
        # N centred rows span at most N - 1 directions; with more dimensions than that, the others
        # (eigenvalue 0, up to rounding) meet no loss term, so their weights are 0 at the optimum:
        # leaving them out makes every product smaller (eigh sorts the eigenvalues ascending)
        rank = min(X.shape[0] - 1, X.shape[1])
        lam, V = lam[lam.numel() - rank:].clamp_min(0), V[:, V.shape[1] - rank:]
        return Basis(Xc @ V.to(self.dtype), V, mu, lam)

    def _targets(self, y: np.ndarray, n_classes: int | None, S: np.ndarray):
        """(T, label mask, loss, binary pair or None) of the problems."""
        y = np.asarray(y)
        if self.loss == "ovr":
            if y.ndim != 2:
                raise ValueError(f"ovr needs (N, K) labels in {{1, 0, -1}}, got shape {y.shape}")
            return (y > 0).astype(np.float64), (y >= 0).astype(np.float64), "ovr", None
        if y.ndim != 1:
            raise ValueError(f"multinomial needs (N,) class ids, got shape {y.shape}")
        K = int(n_classes if n_classes is not None else y.max() + 1)
        seen = np.unique(y[(S > 0).any(1)])
        if len(seen) == 2:  # scikit-learn's binary case: one weight vector for the second class
            return (y == seen[1]).astype(np.float64)[:, None], None, "ovr", (int(seen[0]), int(seen[1]), K)
        return (np.arange(K)[None, :] == y[:, None]).astype(np.float64), None, "multinomial", None

    def fit(self, X: np.ndarray | Basis, y: np.ndarray, C, *, rows: np.ndarray | None = None,
            n_classes: int | None = None, warm_start: torch.Tensor | None = None) -> BatchedLogisticRegression:
        """``X``: features (N, D) or the :class:`Basis` :meth:`prepare` made of them; ``rows`` (N, P):
        row weights (or booleans) of P problems; ``C``: a number or one per problem; ``warm_start``:
        a previous :attr:`coef` (P, D+1, K) of the same labels, e.g. at the previous C of a path."""
        basis = X if isinstance(X, Basis) else self.prepare(X)
        n, dim = basis.R.shape  # dim: the directions kept, at most D
        D = basis.V.shape[0]
        dev, f64 = basis.R.device, torch.float64
        S = np.ones((n, 1)) if rows is None else np.asarray(rows, dtype=np.float64).reshape(n, -1)
        T, mask, loss, self.binary = self._targets(y, n_classes, S)
        T, S_t = torch.as_tensor(T, device=dev), torch.as_tensor(S, device=dev)
        M = torch.ones_like(T) if mask is None else torch.as_tensor(mask, device=dev)
        p, k = S.shape[1], T.shape[1]
        Cv = torch.as_tensor(C, dtype=f64, device=dev).reshape(-1).expand(p).clone()
        V, mu, lam = basis.V.to(dev, f64), basis.mu.to(dev, f64), basis.lam.to(dev, f64)

        def rotate(A: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:  # Q (m, m') · each A[p] (m', K)
            a = A.shape[0]
            return (Q @ A.permute(1, 0, 2).reshape(Q.shape[1], a * k)).reshape(Q.shape[0], a, k).permute(1, 0, 2)

        # the warm start in rotated, centred coordinates: W_rot = Vᵀ W, b' = b + mu·W
        if warm_start is None:
            W_rot, b_c = torch.zeros(p, dim, k, dtype=f64, device=dev), torch.zeros(p, k, dtype=f64, device=dev)
        else:
            W0 = warm_start.to(dev, f64)
            W_rot = rotate(W0[:, :-1].to(basis.R.dtype), basis.V.T.to(dev, basis.R.dtype)).to(f64)  # a start only
            b_c = W0[:, -1] + (mu[None, :, None] * W0[:, :-1]).sum(1)
        # δ from the logits at the start, on 1000 to 2000 of the rows (it only sets a scale)
        sub = torch.arange(0, n, max(1, n // 1000), device=dev)
        Z0 = (basis.R[sub] @ W_rot.permute(1, 0, 2).reshape(dim, p * k).to(basis.R.dtype)).to(f64)
        Z0 = Z0.reshape(len(sub), p, k) + b_c[None]
        delta = CURVATURE_SHARE * _Problems(T[sub], S_t[sub], Cv, loss, M[sub]).mean_curvature(Z0)
        c_mid = float(torch.exp(torch.log(Cv).mean()))
        d = (1.0 + c_mid * delta * lam).rsqrt()
        e = float((1.0 + c_mid * delta * S_t.sum(0).mean()).rsqrt())
        order, _ = row_groups(S_t)  # rows grouped by fold, so the solver need not copy them again
        R = basis.R[order]
        Xh = torch.cat([R * d.to(R.dtype), torch.full((n, 1), e, dtype=R.dtype, device=dev)], 1)
        del R
        U0 = torch.cat([W_rot / d[None, :, None], b_c[:, None, :] / e], 1)
        penalty = torch.cat([d * d, torch.zeros(1, dtype=f64, device=dev)])
        V_x, mu_norm = V.to(basis.R.dtype), float(torch.linalg.vector_norm(mu))

        def stop_test(G: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
            """scikit-learn's rule on (∂f/∂W, ∂f/∂b) = (V·G_U/d + mu·∂f/∂b, G_b/e), from G in U."""
            gb = G[:, -1, :] / e
            GU = G[:, :-1, :] / d[None, :, None]
            # the largest entry of column k of ∂f/∂W is at least (‖GU_k‖ - ‖mu‖·|∂f/∂b_k|) / √D (V is
            # orthogonal): a cheap bound that rules most iterations out before the D x D product
            lower = torch.maximum((torch.linalg.vector_norm(GU, dim=1) - mu_norm * gb.abs()) / D ** 0.5, gb.abs())
            out = (lower <= limit).all(1)
            idx = out.nonzero().squeeze(1)
            if len(idx):
                gW = rotate(GU[idx].to(V_x.dtype), V_x).to(f64) + mu[None, :, None] * gb[idx][:, None, :]
                out[idx] = (gW.abs().amax(1) <= limit[idx]).all(1)
            return out

        U, it, ok = fit(Xh, T[order], S_t[order], Cv, loss=loss, label_mask=M[order], W0=U0, tol=self.tol,
                        max_iter=self.max_iter, memory=self.memory, penalty=penalty, stop_test=stop_test)
        W = rotate(U[:, :-1] * d[None, :, None], V)
        b = e * U[:, -1] - (mu[None, :, None] * W).sum(1)
        self.coef = torch.cat([W, b[:, None, :]], 1)
        self.n_iter, self.converged = it.cpu().numpy(), ok.cpu().numpy()
        self.present = (S.T @ T.cpu().numpy() > 0) if loss == "multinomial" else None
        return self

    def decision_function(self, X: np.ndarray, problem: int = 0) -> np.ndarray:
        """Logits (N, K) of ``problem`` for features (N, D)."""
        if self.coef is None:
            raise RuntimeError("fit the model first")
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64, device=self.coef.device)
        z = (X @ self.coef[problem, :-1] + self.coef[problem, -1]).cpu().numpy()
        if self.binary is not None:
            lo, hi, K = self.binary
            out = np.full((len(z), K), -np.inf)
            out[:, lo], out[:, hi] = -z[:, 0] / 2, z[:, 0] / 2
            return out
        if self.present is not None:
            z = np.where(self.present[problem][None, :], z, -np.inf)
        return z
