"""Stage 2's dense kernels on one matrix: scaling, Gram eigenvalues, ``svdvals``, the
smallest singular values by inverse subspace iteration, and a cheap stable-rank estimate
(SPEC §2).

On the CPU they run on numpy's LAPACK and BLAS (OpenBLAS in numpy's wheels) and, for
large Grams and ``svdvals``, on the MKL inside torch's x86 CPU wheel where it is faster
(:mod:`probe._lapack`), one BLAS thread per call, so that independent matrices can be
spread over the cores (:func:`single_threaded_blas`). On other devices (CUDA) the same
kernels run in torch on the matrix's own device. Either way only the float64 singular
values reach the host.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import numpy as np
import scipy.linalg
import torch

from probe._lapack import (
    eigvalsh_lower,
    gram_lower,
    lu_solver,
    svdvals_destroying,
    svdvals_inplace,
    symv_lower,
    triangular_factor,
    triangular_solver,
    upcast_lower,
)

# |entries| within 2**±safe: no A Aᵀ entry overflows (≤ M·2**(2·safe)), and underflowed
# products stay far below the rounding of λ_max ≥ max|a|² (float32 also for gram32 of float64).
_SAFE_EXPONENT = 32
# Wide matrices go through QR first on the svd route (LAPACK's svdvals does not).
_QR_ASPECT = 1.5
# The stable-rank estimate looks at the first ``4·L`` columns only: a random-like matrix
# stays random-like there (Marchenko–Pastur condition 3 at L/M = 1/4), a low-rank one stays
# low-rank, and the estimate costs a few matrix-vector products on a quarter of a 3×3 conv.
_ESTIMATE_ASPECT = 4
# Inverse subspace iteration: a block of ``count + _GUARD`` vectors refines all ``count``
# unresolved singular values where that is at most ``_MAX_BLOCK``, else a block of ``_BLOCK``
# its smallest ``_BLOCK - _GUARD`` (the guard vectors speed up convergence: the values'
# error shrinks by (σ_k/σ_{p+1})⁴ per step, p the block size). It stops when the values'
# remaining error, estimated from the last two steps' changes (geometric convergence:
# error ≈ change·r/(1−r), r the ratio of the last two changes), is below ``_TOLERANCE``
# relative, or a step changes them by less than ``_ROUNDING``; after ``_MAX_STEPS`` it gives up.
_BLOCK = 8
_GUARD = 2
_MAX_BLOCK = 32
_TOLERANCE = 1e-9
_ROUNDING = 1e-12
_MAX_STEPS = 50
# From this step on, a geometric rate that would need more than _MAX_STEPS steps gives up.
_PREDICT_FROM = 4
# On devices, a float64 Gram of float32 weights is summed from chunks of this many columns.
_TORCH_CHUNK = 1024


Array = TypeVar("Array", np.ndarray, torch.Tensor)


class Kernels(Protocol[Array]):
    """The kernels of one backend, on its arrays (``np.ndarray`` or ``torch.Tensor``)."""

    def prepare(self, matrix: torch.Tensor) -> tuple[Array, int]:
        """The matrix as float32 (float64 if it is float64) times ``2**-e``, and ``e``."""

    def gram_eigenvalues(self, a: Array, double: bool, floor: float = 0.0) -> np.ndarray | None:
        """Ascending float64 eigenvalues of ``A Aᵀ`` formed in float64 or float32, or ``None``
        (nothing solved) where ``A Aᵀ − floor·λ I`` has no Cholesky factor for a lower bound
        ``λ ≤ λ_max``, which proves ``λ_min < floor · λ_max``: a rejection for a few % of an
        eigensolver's cost (passing does not prove the converse: the eigenvalues decide)."""

    def svd_values(self, a: Array) -> np.ndarray:
        """Float64 singular values (descending), via QR for wide matrices."""

    def smallest_or_all(self, a: Array, count: int, floor: float = 0.0,
                        accept: Callable[[np.ndarray], bool] = lambda values: True) -> tuple[np.ndarray, bool]:
        """``(values, True)``: up to ``count`` of the smallest singular values (ascending,
        float64; all where ``count + _GUARD ≤ _MAX_BLOCK``, else ``_BLOCK - _GUARD``) by inverse
        subspace iteration (:func:`inverse_iteration`) on a float64 factor of ``A`` (LU where
        square, else the triangular factor of QR of ``Aᵀ``); else ``(all, False)``: every singular value
        (descending) as :meth:`svd_values` gives them, from the same triangular factor where wide
        (where the factor has an exactly zero pivot, the iteration does not converge,
        ``σ_min < floor`` or ``accept(values)`` is false)."""

    def stable_rank(self, a: Array) -> float:
        """An over-estimate of ``‖A‖²_F / ‖A‖²₂`` on the first ``4·L`` columns (``nan`` for 0)."""


def kernels_for(device: torch.device) -> Kernels[Any]:
    """numpy's LAPACK on the CPU, torch elsewhere."""
    return NUMPY if device.type == "cpu" else TORCH


def scale_exponent(peak: float) -> int:
    """The power of two that brings ``peak`` into [0.5, 1), or 0 where no scaling is needed."""
    if not peak > 0 or not np.isfinite(peak):
        return 0
    e = int(np.frexp(peak)[1])
    return e if abs(e) > _SAFE_EXPONENT else 0


class NumpyKernels:
    """CPU kernels on numpy (zero-copy views of the tensors)."""

    def prepare(self, matrix: torch.Tensor) -> tuple[np.ndarray, int]:
        if matrix.dtype not in (torch.float32, torch.float64):
            matrix = matrix.to(torch.float32)
        a = matrix.detach().numpy()
        e = scale_exponent(float(max(a.max(), -a.min()))) if a.size else 0
        return (_ldexp(a, -e) if e else a), e

    def gram_eigenvalues(self, a: np.ndarray, double: bool, floor: float = 0.0) -> np.ndarray | None:
        gram = gram_lower(a, double)  # lower triangle only; float64 from float64 column blocks
        if floor and not self._definite_above(gram, floor):
            return None
        if not double:
            gram = upcast_lower(gram)  # the float32 Gram is freed before the eigensolver runs
        return eigvalsh_lower(gram)  # in place

    @staticmethod
    def _definite_above(gram: np.ndarray, floor: float) -> bool:
        x = gram.diagonal().copy()  # G·1 ≥ 0 on each row would need the full matrix: the diagonal is as good a start
        for _ in range(3):
            x = symv_lower(gram, _unit(x))
        top = max(_norm(x), float(gram.diagonal().max()))
        shifted = gram.copy(order="F")
        np.fill_diagonal(shifted, gram.diagonal() - floor * top)
        potrf = scipy.linalg.lapack.dpotrf if gram.dtype == np.float64 else scipy.linalg.lapack.spotrf
        return int(potrf(shifted, lower=1, clean=0, overwrite_a=1)[1]) == 0

    def svd_values(self, a: np.ndarray) -> np.ndarray:
        return svdvals_inplace(a, _QR_ASPECT)

    def smallest_or_all(self, a: np.ndarray, count: int, floor: float = 0.0,
                        accept: Callable[[np.ndarray], bool] = lambda values: True) -> tuple[np.ndarray, bool]:
        rows, cols = a.shape
        factor = triangular_factor(a) if cols > rows else None
        solve = lu_solver(a) if factor is None else triangular_solver(factor)
        values = None if solve is None else inverse_iteration(solve, _start(rows, count), count, floor)
        del solve  # the LU buffer, before svd's copy
        if values is not None and accept(values):
            return values, True
        return (self.svd_values(a) if factor is None else svdvals_destroying(factor)), False

    def stable_rank(self, a: np.ndarray) -> float:
        a = a[:, : _ESTIMATE_ASPECT * a.shape[0]].astype(np.float32, copy=False)
        x = a @ _unit(np.ones(a.shape[0], a.dtype) @ a)  # A Aᵀ1; then λ_max ≥ ‖Aᵀx‖² for ‖x‖ = 1
        y = _unit(x) @ a
        top = float(y @ y)
        return float(np.linalg.norm(a)) ** 2 / top if top > 0 else float("nan")


class TorchKernels:
    """Kernels in torch on the matrix's own device (CUDA and other accelerators)."""

    def prepare(self, matrix: torch.Tensor) -> tuple[torch.Tensor, int]:
        if matrix.dtype not in (torch.float32, torch.float64):
            matrix = matrix.to(torch.float32)
        e = scale_exponent(float(matrix.abs().amax())) if matrix.numel() else 0
        return (_ldexp(matrix, -e) if e else matrix), e

    def gram_eigenvalues(self, a: torch.Tensor, double: bool, floor: float = 0.0) -> np.ndarray | None:
        gram = _torch_gram(a, torch.float64 if double else torch.float32)
        if floor and not self._definite_above(gram, floor):
            return None
        return torch.linalg.eigvalsh(gram.to(torch.float64), UPLO="L").cpu().numpy()

    @staticmethod
    def _definite_above(gram: torch.Tensor, floor: float) -> bool:
        shifted = gram.clone()
        shifted.diagonal().sub_(floor * _top_lower_bound(gram))
        return int(torch.linalg.cholesky_ex(shifted).info) == 0

    def svd_values(self, a: torch.Tensor) -> np.ndarray:
        a = a.to(torch.float64)
        if a.shape[1] >= _QR_ASPECT * a.shape[0]:
            a = torch.linalg.qr(a.mT, mode="r").R
        return torch.linalg.svdvals(a).cpu().numpy()

    def smallest_or_all(self, a: torch.Tensor, count: int, floor: float = 0.0,
                        accept: Callable[[np.ndarray], bool] = lambda values: True) -> tuple[np.ndarray, bool]:
        a = a.to(torch.float64)
        rows, cols = a.shape
        values = None
        if cols > rows:
            r = torch.linalg.qr(a.mT, mode="r").R  # A = Rᵀ Qᵀ: A's singular values
            if bool(r.diagonal().all()):
                def solve(x: torch.Tensor, transpose: bool) -> torch.Tensor:
                    return torch.linalg.solve_triangular(r.mT if transpose else r, x, upper=not transpose)

                values = inverse_iteration(solve, torch.from_numpy(_start(rows, count)).to(a.device), count, floor)
            return (values, True) if values is not None and accept(values) else (torch.linalg.svdvals(r).cpu().numpy(), False)
        lu, pivots, info = torch.linalg.lu_factor_ex(a)
        if int(info) == 0:
            def lu_solve(x: torch.Tensor, transpose: bool) -> torch.Tensor:
                return torch.linalg.lu_solve(lu, pivots, x, adjoint=transpose)

            values = inverse_iteration(lu_solve, torch.from_numpy(_start(rows, count)).to(a.device), count, floor)
        return (values, True) if values is not None and accept(values) else (self.svd_values(a), False)

    def stable_rank(self, a: torch.Tensor) -> float:
        a = a[:, : _ESTIMATE_ASPECT * a.shape[0]].to(torch.float32)
        x = a @ _unit(a.sum(dim=0))
        y = _unit(x) @ a
        top = float(y @ y)
        return float(a.square().sum()) / top if top > 0 else float("nan")


def _torch_gram(a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``A Aᵀ`` in ``dtype``: summed from ``_TORCH_CHUNK``-column chunks converted one at a
    time where ``a`` has another dtype (no converted copy of the whole matrix on the device)."""
    if a.dtype == dtype:
        return a @ a.mT
    gram = torch.zeros(a.shape[0], a.shape[0], dtype=dtype, device=a.device)
    for start in range(0, a.shape[1], _TORCH_CHUNK):
        part = a[:, start:start + _TORCH_CHUNK].to(dtype)
        gram.addmm_(part, part.mT)
    return gram


NUMPY = NumpyKernels()
TORCH = TorchKernels()


def inverse_iteration(solve: Callable[[Array, bool], Array], start: Array, count: int,
                      floor: float = 0.0) -> np.ndarray | None:
    """The smallest ``min(count, k)`` singular values (ascending) of a factor ``F`` given by
    ``solve(x, transpose)`` = ``F⁻¹x`` / ``F⁻ᵀx``: subspace iteration on ``(FᵀF)⁻¹`` from the
    orthonormal block ``start`` (L × p), each step's Rayleigh–Ritz values the singular values
    of ``F⁻¹ Y``, ``Y`` an orthonormal basis of ``F⁻ᵀ X`` (they decrease to ``σ_i`` from above,
    at the accuracy of the backward-stable solves: ``ε·‖A‖`` absolute, as float64 ``svdvals``).
    ``k = p − _GUARD`` (``p`` where the block spans everything). ``None`` where the values
    overflow, do not converge in ``_MAX_STEPS`` steps, or the smallest falls below ``floor``
    (then so does ``σ_min``: each value bounds its ``σ_i`` from above)."""
    rows, block = start.shape
    count = _refined_by(rows, block, count)
    linalg: Any = torch.linalg if isinstance(start, torch.Tensor) else np.linalg
    x, last_values, last_change = start, None, np.inf
    for step in range(_MAX_STEPS):
        y = linalg.qr(solve(x, True))[0]
        x, inverse, _ = linalg.svd(solve(y, False), full_matrices=False)
        inverse = inverse.cpu().numpy() if isinstance(inverse, torch.Tensor) else inverse
        with np.errstate(divide="ignore"):
            values = 1.0 / inverse[:count].astype(np.float64)
        if not (np.isfinite(values).all() and values[0] > floor):
            return None
        if last_values is not None:
            change = float(np.max(np.abs(values - last_values) / values))
            if change <= _ROUNDING:
                return values
            if change < last_change < np.inf:
                rate = change / last_change
                error = change * rate / (1 - rate)
                if error <= _TOLERANCE:
                    return values
                if step >= _PREDICT_FROM and step + np.log(_TOLERANCE / error) / np.log(rate) > _MAX_STEPS:
                    return None  # too slow (a dense tail of small values): give up early
            last_change = change
        last_values = values
    return None


def may_converge(eig: np.ndarray, count: int, spread: float) -> bool:
    """Whether :func:`inverse_iteration` for the ``count`` smallest singular values could meet
    ``_TOLERANCE`` within ``_MAX_STEPS`` steps at the fastest rate that the ascending Gram
    eigenvalues ``eig`` allow, each taken anywhere within ``± spread`` of its ``σ_i²``. False
    for a dense tail (e.g. ``σ_i ∝ i^-1.5`` at 4096 rows: its smallest values 0.04 % apart), where
    factoring the matrix for the iteration would be wasted."""
    rows = len(eig)
    block = _block(rows, count)
    if block == rows:
        return True
    wanted = refinable(rows, count)
    ratio = max(float(eig[wanted - 1]) - spread, 0.0) / (float(eig[block]) + spread)
    # each step shrinks the values' error by ratio² at best (see _BLOCK)
    return bool(ratio == 0 or np.log(_TOLERANCE) >= 2 * _MAX_STEPS * np.log(ratio))


def refinable(rows: int, count: int) -> int:
    """How many of the ``count`` smallest singular values :func:`inverse_iteration` refines
    (from :func:`_start`'s block)."""
    return _refined_by(rows, _block(rows, count), count)


def _refined_by(rows: int, block: int, count: int) -> int:
    """How many of ``count`` wanted values a block of ``block`` vectors refines (all but the guard vectors)."""
    return min(count, block if block == rows else block - _GUARD)


def _block(rows: int, count: int) -> int:
    """The iteration's block size for ``count`` wanted values."""
    return min(rows, count + _GUARD if count + _GUARD <= _MAX_BLOCK else _BLOCK)


def _start(rows: int, count: int) -> np.ndarray:
    """The iteration's first block for ``count`` wanted values: an orthonormal basis of seeded
    Gaussian vectors (the same values on every run)."""
    return np.linalg.qr(np.random.default_rng(0).standard_normal((rows, _block(rows, count))))[0]


def _ldexp(a: Array, e: int) -> Array:
    """``a · 2**e`` in two exact steps, so neither factor overflows the dtype (numpy or torch)."""
    half = e // 2
    return a * 2.0**half * 2.0 ** (e - half)


def _top_lower_bound(gram: Array) -> float:
    """A lower bound ``λ ≤ λ_max`` of a positive semi-definite ``gram`` (three power steps)."""
    x = gram.sum(1)
    for _ in range(3):
        x = gram @ _unit(x)
    return max(_norm(x), float(gram.diagonal().max()))


def _unit(v: Array) -> Array:
    """``v / ‖v‖`` (numpy or torch; a zero vector stays zero)."""
    norm = _norm(v)
    return v / norm if norm > 0 else v


def _norm(v: Array) -> float:
    """``‖v‖`` without overflow in the vector's dtype."""
    peak = float(abs(v).max())
    return peak * float(((v / peak) ** 2).sum()) ** 0.5 if peak > 0 else 0.0


class _BlasThreads:
    """numpy's BLAS limited to one thread while any caller is inside :meth:`single`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._libraries: list[Any] | None = None
        self._previous: list[int] = []

    @contextmanager
    def single(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                if self._libraries is None:  # inspects the loaded libraries: once
                    from threadpoolctl import ThreadpoolController

                    self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
                # each library's own getter and setter: ~10× cheaper than threadpoolctl's limit()
                self._previous = [library.num_threads for library in self._libraries]
                self._set([1] * len(self._previous))
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._set(self._previous)

    def _set(self, counts: list[int]) -> None:
        for library, count in zip(self._libraries or (), counts):
            if library.num_threads != count:
                library.set_num_threads(count)


_BLAS = _BlasThreads()


def single_threaded_blas() -> contextlib.AbstractContextManager[None]:
    """numpy's BLAS on one thread while inside (nested and concurrent uses allowed; the
    previous setting is restored when the last one leaves). The caller spreads matrices
    over threads instead: LAPACK's eigensolver hardly uses a second thread on these sizes.
    (Other numpy code running meanwhile also gets one BLAS thread.)"""
    return _BLAS.single()
