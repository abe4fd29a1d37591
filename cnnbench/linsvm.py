"""A batched linear SVM solver: many one-vs-rest problems at once, with warm starts along C.

Solves, for every column k of a ±1 label matrix Y (0 = not in this problem), the primal

    min_w  ½‖w‖² + C Σ_i s_ik ℓ(y_ik · w·x̃_i),      x̃_i = [x_i, bias_scale]

which is what liblinear (scikit-learn's ``LinearSVC``) solves: the bias is an extra, regularised
feature (``intercept_scaling``). Losses:

* ``squared_hinge``: ℓ(z) = max(0, 1 - z)², LinearSVC's default; solved exactly (up to ``tol``).
* ``hinge``: ℓ(z) = max(0, 1 - z), the paper's; its kink is smoothed over a width ``smooth``
  (ℓ = (1-z)²/(2·smooth) for 1-smooth < z < 1, 1 - z - smooth/2 below; the smoothed optimum tends
  to the hinge optimum as smooth → 0). ``benchmarks/svm_speed.py`` measures the accuracy against
  LinearSVC(loss='hinge').

Method: truncated Newton (conjugate gradient on the generalised Hessian, as liblinear's TRON
for the squared hinge) with a backtracking line search, all classes in the same matrix products
(torch, CPU or GPU). Each Newton step costs 2 matrix products plus 2 per CG iteration; the line
search reuses X·s, so it needs none. Classes that converged drop out of the products. Stopping:
‖∇f_k‖ ≤ tol · ‖∇f_k(0)‖ for every class (liblinear's primal criterion).
"""

from __future__ import annotations

import numpy as np
import torch

MAX_NEWTON = 100  # Newton steps per fit; a fit that needs more is reported, never a hang


def _loss_terms(z: torch.Tensor, loss: str, smooth: float):
    """Per-entry loss value, first and (generalised) second derivative w.r.t. z."""
    r = 1.0 - z
    if loss == "squared_hinge":
        rp = r.clamp_min(0)
        return rp * rp, -2.0 * rp, 2.0 * (r > 0).to(z.dtype)
    if loss == "hinge":
        mu = smooth
        quad = (r > 0) & (r < mu)
        val = torch.where(r >= mu, r - mu / 2, torch.where(quad, r * r / (2 * mu), torch.zeros_like(r)))
        d1 = -torch.clamp(r / mu, 0.0, 1.0)
        return val, d1, quad.to(z.dtype) / mu
    raise ValueError(f"loss must be 'hinge' or 'squared_hinge', got {loss!r}")


def fit(X: torch.Tensor, Y: torch.Tensor, S: torch.Tensor, C: float, *, loss: str = "squared_hinge",
        smooth: float = 0.05, tol: float = 1e-4, max_newton: int = MAX_NEWTON, max_cg: int = 100,
        W0: torch.Tensor | None = None, Gram: torch.Tensor | None = None,
        max_direct: int = 1536) -> tuple[torch.Tensor, int, bool]:
    """Solve all columns of Y at once. ``X`` (N, D') already carries the bias column; ``Y`` (N, K)
    in {+1, -1} (any value where ``S`` is 0); ``S`` (N, K) per-entry weights (0 = not in the
    problem). ``Gram`` (N, N) = X Xᵀ, if given, lets Newton steps whose Hessian has at most
    ``max_direct`` active rows per class be solved exactly (Woodbury + batched Cholesky); the others
    use preconditioned CG. Returns (W (D', K), Newton steps taken, whether every class met the
    stopping rule): the work is bounded (at most ``max_newton`` steps of at most ``max_cg`` CG
    iterations each), and a fit that ran out of steps says so rather than running on."""
    n, d = X.shape
    k = Y.shape[1]
    W = torch.zeros(d, k, dtype=X.dtype, device=X.device) if W0 is None else W0.clone()
    CS = C * S
    X2 = X * X
    CSY = CS * Y
    Z = (X @ W) * Y
    # reference gradient norm at w = 0 (liblinear's stopping rule)
    _, d1_0, _ = _loss_terms(torch.zeros(1, 1, dtype=X.dtype, device=X.device), loss, smooth)
    g0 = torch.linalg.vector_norm(X.T @ (CSY * d1_0), dim=0).clamp_min(1e-12)
    active = torch.arange(k, device=X.device)
    steps, converged = 0, False
    for steps in range(max_newton + 1):  # the last pass only checks the last step
        Wa, Za, CSa, CSYa = W[:, active], Z[:, active], CS[:, active], CSY[:, active]
        val, d1, d2 = _loss_terms(Za, loss, smooth)
        G = Wa + X.T @ (CSYa * d1)
        gnorm = torch.linalg.vector_norm(G, dim=0)
        done = gnorm <= tol * g0[active]
        converged = bool(done.all())
        if converged or steps == max_newton:
            break
        if bool(done.any()):
            keep = ~done
            active = active[keep]
            Wa, Za, CSa, CSYa, val, d1, d2, G, gnorm = (t[:, keep] if t.dim() == 2 else t[keep] for t in
                                                         (Wa, Za, CSa, CSYa, val, d1, d2, G, gnorm))
        Dm = CSa * d2  # Hessian weights (Y² = 1)
        s = _newton_direction(X, X2, Gram, G, Dm, gnorm, max_cg, max_direct)
        # backtracking line search on the exact objective, reusing X·s
        Ys = (X @ s) * Y[:, active]
        f0 = 0.5 * (Wa * Wa).sum(0) + (CSa * val).sum(0)
        gs = (G * s).sum(0)
        ww, ws, ss = (Wa * Wa).sum(0), (Wa * s).sum(0), (s * s).sum(0)
        t = torch.ones_like(f0)
        pending = torch.ones_like(f0, dtype=torch.bool)
        for _ in range(30):
            v, _, _ = _loss_terms(Za + t * Ys, loss, smooth)
            ft = 0.5 * (ww + 2 * t * ws + t * t * ss) + (CSa * v).sum(0)
            ok = ft <= f0 + 1e-4 * t * gs
            pending = pending & ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, t * 0.5, t)
        W[:, active] = Wa + t * s
        Z[:, active] = Za + t * Ys
    return W, steps, converged


def _newton_direction(X, X2, Gram, G, Dm, gnorm, max_cg, max_direct):
    """Solve (I + Xᵀ diag(Dm_k) X) s_k = -G_k for every column k."""
    active_rows = Dm > 0
    m = int(active_rows.sum(0).max()) if Dm.numel() else 0
    if Gram is not None and 0 < m <= max_direct:
        # Woodbury: H⁻¹g = g - X_Aᵀ (D_A⁻¹ + X_A X_Aᵀ)⁻¹ X_A g, one small system per class
        order = torch.argsort(active_rows.to(torch.int8), dim=0, descending=True, stable=True)[:m].T  # (K, m)
        valid = torch.gather(active_rows, 0, order.T).T  # (K, m)
        d = torch.gather(Dm, 0, order.T).T
        M = Gram[order[:, :, None], order[:, None, :]]
        M = torch.where(valid[:, :, None] & valid[:, None, :], M, torch.zeros((), dtype=M.dtype, device=M.device))
        diag = torch.where(valid, 1.0 / d.clamp_min(1e-30), torch.ones_like(d))
        M = M + torch.diag_embed(diag)
        XG = X @ G  # (N, K)
        b = torch.where(valid, torch.gather(XG, 0, order.T).T, torch.zeros_like(d))
        L, info = torch.linalg.cholesky_ex(M)
        if not bool((info != 0).any()):
            u = torch.cholesky_solve(b.unsqueeze(-1), L).squeeze(-1)  # (K, m)
            U = torch.zeros_like(Dm)
            U.scatter_(0, order.T, torch.where(valid, u, torch.zeros_like(u)).T)
            return -(G - X.T @ U)
    # conjugate gradient, Jacobi-preconditioned
    Minv = 1.0 / (1.0 + X2.T @ Dm)
    s = torch.zeros_like(G)
    r = -G
    zr = Minv * r
    p = zr.clone()
    rz = (r * zr).sum(0)
    cg_tol = (0.1 * gnorm) ** 2
    for _ in range(max_cg):
        Hp = p + X.T @ (Dm * (X @ p))
        alpha = rz / (p * Hp).sum(0).clamp_min(1e-30)
        s = s + alpha * p
        r = r - alpha * Hp
        if bool(((r * r).sum(0) <= cg_tol).all()):
            break
        zr = Minv * r
        rz_new = (r * zr).sum(0)
        p = zr + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return s


class BatchedLinearSVM:
    """One-vs-rest linear SVMs for every column of a label matrix, fitted together.

    ``fit(X, Y, C)`` with X (N, D) features and Y (N, K) in {1, 0, -1(ignored)} (multi-label) or
    class ids (N,) (multi-class one-vs-rest); ``decision_function`` gives (N, K) scores.
    ``class_weight='balanced'`` weighs each binary problem's positives by n/(2·n_pos) and its
    negatives by n/(2·n_neg) (n: labelled rows of that problem).
    """

    def __init__(self, loss: str = "squared_hinge", smooth: float = 0.05, tol: float = 1e-4,
                 class_weight: str | None = None, bias_scale: float = 1.0, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, rotate: bool = True):
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be null or 'balanced', got {class_weight!r}")
        self.loss, self.smooth, self.tol, self.class_weight = loss, float(smooth), float(tol), class_weight
        self.bias_scale, self.device, self.dtype = float(bias_scale), device, dtype
        self.W: torch.Tensor | None = None
        self.n_iter = 0
        self.converged = True  # whether the last fit met the stopping rule for every class
        self.rotate = bool(rotate)
        self.rotation: torch.Tensor | None = None

    def prepare(self, X: np.ndarray) -> torch.Tensor:
        """Features as the solver's tensor: bias column appended, then rotated onto the principal
        axes of X̃ᵀX̃ (an orthogonal change of basis leaves ‖w‖² and every margin unchanged, so the
        optimum is the same; it makes the diagonal preconditioner of the Newton steps nearly exact
        along the dominant directions, which are what make the problem ill-conditioned). Reuse the
        result across fits of the same training set (it fixes the basis of warm starts)."""
        Xt = self._x(X)
        if self.rotate:
            gram = (Xt.T @ Xt).cpu().numpy().astype(np.float64)
            _, V = np.linalg.eigh(gram)  # LAPACK through numpy: far faster than torch's float64 eigh on CPU
            self.rotation = torch.as_tensor(V, dtype=self.dtype, device=self.device)
            Xt = Xt @ self.rotation
        else:
            self.rotation = None
        return Xt

    def _x(self, X: np.ndarray) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.device)
        return torch.cat([X, torch.full((X.shape[0], 1), self.bias_scale, dtype=self.dtype, device=self.device)], 1)

    def problems(self, y: np.ndarray, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(signs ±1, weights) (N, K) of the binary problems for labels ``y``."""
        y = np.asarray(y)
        if y.ndim == 1:
            K = int(n_classes if n_classes is not None else y.max() + 1)
            L = np.where(np.arange(K)[None, :] == y[:, None], 1, 0).astype(np.int8)
        else:
            L = y.astype(np.int8)
        signs = np.where(L > 0, 1.0, -1.0).astype(np.float32)
        weights = (L >= 0).astype(np.float32)
        if self.class_weight == "balanced":
            n_pos = (L > 0).sum(0).astype(np.float64)
            n_lab = (L >= 0).sum(0).astype(np.float64)
            n_neg = n_lab - n_pos
            wp = np.where(n_pos > 0, n_lab / (2 * np.maximum(n_pos, 1)), 0.0)
            wn = np.where(n_neg > 0, n_lab / (2 * np.maximum(n_neg, 1)), 0.0)
            weights = weights * np.where(L > 0, wp, wn).astype(np.float32)
        return signs, weights

    def fit(self, X: np.ndarray | torch.Tensor, y: np.ndarray, C: float, n_classes: int | None = None,
            warm_start: torch.Tensor | None = None, gram: torch.Tensor | None = None) -> "BatchedLinearSVM":
        """``X``: features (N, D), or the tensor :meth:`prepare` made; ``gram``: its X Xᵀ, enabling
        exact Newton steps on small active sets (see :func:`fit`)."""
        Xt = X if isinstance(X, torch.Tensor) else self.prepare(X)
        signs, weights = self.problems(y, n_classes)
        Y = torch.as_tensor(signs, dtype=self.dtype, device=self.device)
        S = torch.as_tensor(weights, dtype=self.dtype, device=self.device)
        self.W, self.n_iter, converged = fit(Xt, Y, S, float(C), loss=self.loss, smooth=self.smooth, tol=self.tol,
                                             W0=warm_start, Gram=gram)
        self.converged = converged and bool(torch.isfinite(self.W).all())
        return self

    def decision_function(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        if self.W is None:
            raise RuntimeError("fit the SVM first")
        Xt = self._x(X)
        if self.rotation is not None:
            Xt = Xt @ self.rotation
        return (Xt @ self.W).cpu().numpy()
