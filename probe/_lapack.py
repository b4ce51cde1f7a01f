"""In-place LAPACK kernels for the CPU route (SPEC §2), each within a bounded amount of
extra memory: the float64 Gram of a float32 matrix is built from column blocks (never a
float64 copy of the whole matrix) into its lower triangle alone, in memory whose pages
become resident only where written (so about half the Gram's bytes), eigenvalues and
singular values are computed in place, a square matrix's LU factor takes one float64 copy of
it, and a wide matrix's triangular factor (QR of ``Aᵀ``) is folded in from column blocks: its
own L × L float64 bytes and one block's.

The float64 Gram's products use MKL's ``dgemm`` (inside torch's x86 CPU wheel, found through
``ctypes``) where the engine has several threads, else OpenBLAS's ``dsyrk``. Eigenvalues of
Grams use MKL's ``dsyevd`` where it is found and faster (64 to 703 rows, and from 1120 on:
``_MKL_EIGEN_ORDERS``), else LAPACK's two-stage tridiagonal reduction (``dsyevd_2stage``,
eigenvalues only: mostly BLAS-3) from the OpenBLAS that numpy ships; where neither is found,
scipy's ``dsyevd``. All in place.
The caller sets MKL's thread count per calling thread (:func:`mkl_threads`): torch's MKL
otherwise starts ``torch.get_num_threads()`` threads inside each of the caller's threads.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import mmap
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.linalg.blas as blas
import scipy.linalg.lapack as lapack

log = logging.getLogger(__name__)

# The float64 Gram is summed from float64 copies of chunks of this many columns of the
# matrix (at most a sixteenth of them, but ≥ 64: at most an eighth of the matrix's float32
# bytes from 1024 columns on). Narrower chunks slow the products down (4096 × 4096, one
# thread: 1.26 s at 128 columns, 1.08 s at 256).
_CHUNK = 256
_MIN_CHUNK = 64
# The float64 Gram's lower triangle is updated in column blocks this wide (one dgemm each):
# only each block's own diagonal square is also written above the diagonal.
_GRAM_COLUMNS = 256
# Grams from this many bytes on live in an anonymous memory map: pages that are never
# written (the upper triangle's) never become resident. numpy's own allocator asks for
# transparent huge pages, which a single write makes resident 2 MB at a time.
_LAZY_BYTES = 1 << 20
_COL_MAJOR = 102  # LAPACK_COL_MAJOR
# A wide matrix's triangular factor is folded in from float64 copies of this many columns at
# a time, by dtpqrt with this block size: 1.05-1.3x MKL's dgeqrf on a float64 copy of the
# whole matrix (256x2304 to 2048x8192, one thread), for L x L float64 bytes instead of L x M.
_QR_BLOCK = 1024
_QR_NB = 32
# From this order on, MKL's dsyevd and dgesdd (inside torch's CPU wheel, where it exists)
# replace OpenBLAS's svd (measured 1.8x faster at 3072 rows).
_MKL_MIN = 1024
# MKL's dsyevd against OpenBLAS's two-stage dsyevd on a Gram as gram_lower builds it, one
# thread, CPU time (benchmarks/RESULTS.md): 0.55-0.80x from 64 to 576 rows, 0.93x at 640-704,
# 1.24-1.34x from 768 to 1088 (MKL changes its own method at ~1100), 0.79-0.83x from 1152
# on (0.64x at 4096); OpenBLAS is faster below 64 too (the call's own overhead).
_MKL_EIGEN_ORDERS = (range(64, 704), range(1120, 1 << 62))


def gram_lower(a: np.ndarray, double: bool) -> np.ndarray:
    """``A Aᵀ`` (``a``: L × M, float32 or float64, any memory order) as a Fortran-ordered
    L × L array whose lower triangle alone is set. ``double``: formed in float64 from float64
    copies of column blocks of ``a`` (the upper triangle's pages left unwritten), by MKL's
    ``dgemm`` on the lower triangle's blocks, or by OpenBLAS's ``dsyrk`` where the engine runs
    on one thread (2–30 % faster there; but OpenBLAS serialises concurrent callers, and MKL
    also scales over the threads a matrix measured alone gets); else in float32."""
    rows, cols = a.shape
    if not double:
        x, trans = _fortran(a.astype(np.float32, copy=False))
        return blas.ssyrk(1.0, x, trans=trans, lower=1)
    gram = _mapped_zeros(rows, rows)
    chunk = max(_MIN_CHUNK, min(cols // 16, _CHUNK))
    buffer = _mapped_zeros(rows, min(chunk, cols))
    gemm = _mkl("dgemm_") if _engine_threads() > 1 else None
    for start in range(0, cols, chunk):
        part = buffer[:, :min(chunk, cols - start)]  # Fortran-contiguous
        np.copyto(part, a[:, start:start + chunk])
        if gemm is None:  # the lower triangle only, too
            gram = blas.dsyrk(1.0, part, beta=1.0, c=gram, trans=0, lower=1, overwrite_c=1)
        else:
            _add_lower(gemm, gram, part)
    return gram


def _mapped_zeros(rows: int, cols: int) -> np.ndarray:
    """A zeroed Fortran-ordered float64 array; from ``_LAZY_BYTES`` on, in an anonymous memory
    map: its pages become resident where written, and are returned to the system when the
    array is freed (the C heap keeps freed blocks of a few MB)."""
    size = 8 * rows * cols
    if size < _LAZY_BYTES:
        return np.zeros((rows, cols), np.float64, order="F")
    return np.frombuffer(mmap.mmap(-1, size), np.float64).reshape((rows, cols), order="F")


def _add_lower(gemm: Callable[..., None], gram: np.ndarray, part: np.ndarray) -> None:
    """``gram += part partᵀ`` on the lower triangle (and the upper halves of the diagonal
    ``_GRAM_COLUMNS``-squares), one ``dgemm`` per column block; both Fortran-ordered float64."""
    integer = ctypes.c_int32
    rows, width = part.shape
    one, ld, k = ctypes.c_double(1.0), integer(rows), integer(width)
    for j in range(0, rows, _GRAM_COLUMNS):
        below, across = integer(rows - j), integer(min(_GRAM_COLUMNS, rows - j))
        source = ctypes.c_void_p(part.ctypes.data + 8 * j)
        target = ctypes.c_void_p(gram.ctypes.data + 8 * (j * rows + j))
        gemm(b"N", b"T", ctypes.byref(below), ctypes.byref(across), ctypes.byref(k), ctypes.byref(one),
             source, ctypes.byref(ld), source, ctypes.byref(ld), ctypes.byref(one), target, ctypes.byref(ld),
             ctypes.c_size_t(1), ctypes.c_size_t(1))


def _fortran(a: np.ndarray) -> tuple[np.ndarray, int]:
    """``(x, trans)`` with ``x`` Fortran-contiguous and ``syrk(x, trans)`` = ``A Aᵀ``: no copy
    for a C- or Fortran-ordered ``a`` (a copy would cost a transposing pass over it)."""
    if a.flags.f_contiguous:
        return a, 0
    return np.ascontiguousarray(a).T, 1


def symv_lower(gram: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``G x`` for a Fortran-ordered ``gram`` of which only the lower triangle is set."""
    symv = blas.dsymv if gram.dtype == np.float64 else blas.ssymv
    return symv(1.0, gram, x.astype(gram.dtype, copy=False), lower=1)


def upcast_lower(gram: np.ndarray) -> np.ndarray:
    """A float64 Fortran-ordered copy of the lower triangle of the Fortran-ordered ``gram``
    (in a memory map from ``_LAZY_BYTES`` on: the upper triangle never becomes resident)."""
    rows = gram.shape[0]
    upcast = _mapped_zeros(rows, rows)
    for j in range(0, rows, _GRAM_COLUMNS):
        upcast[j:, j:j + _GRAM_COLUMNS] = gram[j:, j:j + _GRAM_COLUMNS]
    return upcast


def eigvalsh_lower(gram: np.ndarray) -> np.ndarray:
    """Ascending float64 eigenvalues of the symmetric matrix in ``gram``'s lower triangle
    (Fortran-ordered; a float64 ``gram`` is overwritten, another one upcast first)."""
    gram = gram if gram.dtype == np.float64 and gram.flags.f_contiguous else upcast_lower(gram)
    n = gram.shape[0]
    mkl = _mkl_dsyevd() if any(n in orders for orders in _MKL_EIGEN_ORDERS) else None
    if mkl is not None:
        values = mkl(gram)
        if values is not None:
            return values
    two_stage = _lapacke("dsyevd_2stage")
    if two_stage is not None:
        values = np.empty(n, np.float64)
        info = two_stage(_COL_MAJOR, b"N", b"L", n, gram.ctypes.data, max(n, 1), values.ctypes.data)
        if info == 0:
            return values
        log.debug("dsyevd_2stage failed (info %d); dsyevd instead", info)
    lwork = int(lapack.dsyevd_lwork(n, compute_v=0, lower=1)[0])
    values, _, info = lapack.dsyevd(gram, compute_v=0, lower=1, lwork=max(lwork, 64 * n + 2 * n + 1), overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsyevd did not converge (info {info})")
    return values


def svdvals_inplace(a: np.ndarray, qr_aspect: float) -> np.ndarray:
    """Float64 singular values (descending) of ``a`` (L × M, L ≤ M) with one float64 copy of
    it as the only large allocation: reduced in place to its triangular factor
    (:func:`triangular_factor`) where ``M ≥ qr_aspect · L``."""
    rows, cols = a.shape
    return svdvals_destroying(triangular_factor(a) if cols >= qr_aspect * rows and rows > 0 else _float64_copy(a))


def svdvals_destroying(work: np.ndarray) -> np.ndarray:
    """Float64 singular values (descending) of the Fortran-ordered float64 ``work``, computed
    in place (``work`` is destroyed)."""
    m, n = work.shape
    if min(m, n) >= _MKL_MIN and (mkl_values := _mkl_dgesdd(work)) is not None:
        return mkl_values
    values = np.empty(min(m, n), np.float64)
    gesdd = _lapacke("dgesdd")
    if gesdd is not None:  # numpy's own LAPACK: the values numpy's svdvals gives
        unused = np.empty(1, np.float64)
        info = gesdd(_COL_MAJOR, b"N", m, n, work.ctypes.data, max(m, 1), values.ctypes.data,
                     unused.ctypes.data, 1, unused.ctypes.data, 1)
    else:
        lwork = int(lapack.dgesdd_lwork(m, n, compute_uv=0, full_matrices=0)[0])
        _, values, _, info = lapack.dgesdd(work, compute_uv=0, full_matrices=0, lwork=max(lwork, 1), overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dgesdd did not converge (info {info})")
    return values


Solve = Callable[[np.ndarray, bool], np.ndarray]


def lu_solver(a: np.ndarray) -> Solve | None:
    """``solve(x, transpose)``: ``F⁻¹ x`` (``F⁻ᵀ x``) for ``F`` the square ``a`` (or ``aᵀ``: the
    same singular values) in float64, LU-factored in place with partial pivoting (``dgetrf``)
    in one float64 copy; ``None`` where a pivot is exactly zero. MKL's ``dgetrf``/``dgetrs``
    where torch has them (LU 1.1–1.2×, solves 1.2–2× faster than OpenBLAS's, one thread), else scipy's."""
    lu = _float64_copy(a)
    factor, solver = _mkl("dgetrf_"), _mkl("dgetrs_")
    if factor is None or solver is None:
        lu, pivots, info = lapack.dgetrf(lu, overwrite_a=1)

        def solve(x: np.ndarray, transpose: bool) -> np.ndarray:
            return _checked("dgetrs", *lapack.dgetrs(lu, pivots, x, trans=int(transpose)))
    else:
        integer, n = ctypes.c_int32, lu.shape[0]
        order, pivots, status = ctypes.byref(integer(n)), np.empty(n, np.int32), integer(0)
        factor(order, order, _pointer(lu), order, _pointer(pivots), ctypes.byref(status))
        info = status.value

        def solve(x: np.ndarray, transpose: bool) -> np.ndarray:
            x = np.array(x, dtype=np.float64, order="F")
            solver(b"T" if transpose else b"N", order, ctypes.byref(integer(x.shape[1])), _pointer(lu), order,
                   _pointer(pivots), _pointer(x), order, ctypes.byref(status), ctypes.c_size_t(1))
            return _checked("dgetrs", x, status.value)

    if info < 0:
        raise np.linalg.LinAlgError(f"dgetrf failed (info {info})")
    return None if info > 0 else solve


def _pointer(array: np.ndarray) -> ctypes.c_void_p:
    """``array``'s data as a ``ctypes`` pointer (for the Fortran interfaces called here)."""
    return array.ctypes.data_as(ctypes.c_void_p)


def triangular_solver(factor: np.ndarray) -> Solve | None:
    """``solve(x, transpose)`` for the upper-triangular ``factor`` (:func:`triangular_factor`);
    ``None`` where a diagonal entry is exactly zero."""
    if not factor.diagonal().all():
        return None
    return lambda x, transpose: _checked("dtrtrs", *lapack.dtrtrs(factor, x, lower=0, trans=int(transpose)))


def _checked(name: str, x: np.ndarray, info: int) -> np.ndarray:
    if info != 0:
        raise np.linalg.LinAlgError(f"{name} failed (info {info})")
    return x


def _float64_copy(a: np.ndarray) -> np.ndarray:
    """``a`` or ``aᵀ`` (the same singular values) in float64, Fortran order, whichever copies
    without transposing."""
    return np.array(a, dtype=np.float64, order="F") if a.flags.f_contiguous else np.array(a, dtype=np.float64).T


def triangular_factor(a: np.ndarray) -> np.ndarray:
    """The upper-triangular factor ``R`` (L × L, float64, Fortran order, zeros below the
    diagonal) of ``Aᵀ = QR`` for ``a`` (L × M, 0 < L < M): it has ``a``'s singular values. QR of
    the first L columns (``dgeqrf``), then each further block of ``_QR_BLOCK`` columns folded
    into ``R`` (``dtpqrt``: QR of ``R`` stacked on the block's transpose, in ``R``'s place): never
    more than ``R`` and one block in float64, whatever the matrix's width or memory order."""
    rows, cols = a.shape
    r = np.array(a[:, :rows], dtype=np.float64, order="C").T  # (A's first L columns)ᵀ, Fortran-ordered
    _geqrf(r)
    for start in range(rows, cols, _QR_BLOCK):
        block = np.array(a[:, start:start + _QR_BLOCK], dtype=np.float64, order="C").T
        r, _, _, info = lapack.dtpqrt(0, min(_QR_NB, rows), r, block, overwrite_a=1, overwrite_b=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"dtpqrt failed (info {info})")
    for j in range(rows - 1):
        r[j + 1:, j] = 0.0
    return r


def _geqrf(work: np.ndarray) -> None:
    """QR of the square Fortran-ordered float64 ``work`` in place (``R`` in its upper
    triangle): MKL's ``dgeqrf`` where torch has it (1.1–1.6× faster than OpenBLAS's), else scipy's."""
    function, n = _mkl("dgeqrf_"), work.shape[0]
    if function is None:
        info = lapack.dgeqrf(work, lwork=64 * n, overwrite_a=1)[3]
    else:
        integer, tau, query, status = ctypes.c_int32, np.empty(n, np.float64), np.empty(1, np.float64), ctypes.c_int32(0)

        def call(buffer: np.ndarray, lwork: int) -> None:
            size = ctypes.byref(integer(n))
            function(size, size, _pointer(work), size, _pointer(tau), _pointer(buffer), ctypes.byref(integer(lwork)),
                     ctypes.byref(status))

        call(query, -1)  # workspace query
        buffer = np.empty(max(1, int(query[0])), np.float64)
        call(buffer, buffer.size)
        info = status.value
    if info != 0:
        raise np.linalg.LinAlgError(f"dgeqrf failed (info {info})")


@functools.cache
def _mkl(name: str) -> Callable[..., None] | None:
    """A LAPACK routine (Fortran interface, LP64) of the MKL that torch's x86 CPU wheel links
    statically, or ``None`` where torch has no MKL."""
    import torch

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    if not torch.backends.mkl.is_available() or not os.path.exists(path):
        return None
    try:
        library = ctypes.CDLL(path)
        function = getattr(library, name)
        library.mkl_get_max_threads  # noqa: B018 (MKL's, not another LAPACK's, routine)
    except (OSError, AttributeError):
        return None
    function.restype = None
    return function


@contextmanager
def mkl_threads(count: int) -> Iterator[None]:
    """torch's MKL on ``count`` threads in the calling thread while inside (a thread-local
    setting, restored after; nothing where torch has no MKL). With MKL's default,
    ``torch.get_num_threads()`` threads in each of two threads solving matrices side by side
    on two cores took 1.4–2.7× the wall time (``benchmarks/RESULTS.md``)."""
    local = _mkl_local_threads()
    if local is None:
        yield
        return
    previous = local(count)
    try:
        yield
    finally:
        local(previous)  # 0: the global setting again


def _engine_threads() -> int:
    """``torch.get_num_threads()``: the threads the engine spreads its matrices over."""
    import torch

    return torch.get_num_threads()


@functools.cache
def _mkl_local_threads() -> Callable[[int], int] | None:
    """MKL's ``mkl_set_num_threads_local`` (by value; the lower-case symbol takes a pointer),
    or ``None`` where torch has no MKL."""
    function: Any = _mkl("MKL_Set_Num_Threads_Local")
    if function is not None:
        function.restype, function.argtypes = ctypes.c_int, [ctypes.c_int]
    return function


def _mkl_dgesdd(work: np.ndarray) -> np.ndarray | None:
    """Singular values of the Fortran-ordered float64 ``work`` (destroyed) by MKL's
    ``dgesdd``, or ``None`` where there is no MKL."""
    function = _mkl("dgesdd_")
    if function is None:
        return None
    integer = ctypes.c_int32
    m, n = work.shape
    values = np.empty(min(m, n), np.float64)
    unused, query = np.empty(1, np.float64), np.empty(1, np.float64)
    iwork = np.empty(max(1, 8 * min(m, n)), np.int32)
    info = integer(0)

    def call(buffer: np.ndarray, lwork: int) -> None:
        function(b"N", ctypes.byref(integer(m)), ctypes.byref(integer(n)), work.ctypes.data_as(ctypes.c_void_p),
                 ctypes.byref(integer(max(m, 1))), values.ctypes.data_as(ctypes.c_void_p), unused.ctypes.data_as(ctypes.c_void_p),
                 ctypes.byref(integer(1)), unused.ctypes.data_as(ctypes.c_void_p), ctypes.byref(integer(1)),
                 buffer.ctypes.data_as(ctypes.c_void_p), ctypes.byref(integer(lwork)), iwork.ctypes.data_as(ctypes.c_void_p),
                 ctypes.byref(info))

    call(query, -1)
    buffer = np.empty(max(1, int(query[0])), np.float64)
    call(buffer, buffer.size)
    if info.value != 0:  # work is destroyed: no second attempt on it
        raise np.linalg.LinAlgError(f"dgesdd (MKL) did not converge (info {info.value})")
    return values


@functools.cache
def _mkl_dsyevd() -> Callable[[np.ndarray], np.ndarray | None] | None:
    """In-place eigenvalues (``dsyevd``, lower triangle) from torch's MKL, or ``None``."""
    function = _mkl("dsyevd_")
    if function is None:
        return None
    integer = ctypes.c_int32

    def solve(gram: np.ndarray) -> np.ndarray | None:
        n = gram.shape[0]
        values = np.empty(n, np.float64)
        work, iwork = np.empty(1, np.float64), np.empty(1, np.int32)
        info = integer(0)

        def call(lwork: int, liwork: int) -> None:
            function(b"N", b"L", ctypes.byref(integer(n)), gram.ctypes.data_as(ctypes.c_void_p), ctypes.byref(integer(max(n, 1))),
                     values.ctypes.data_as(ctypes.c_void_p), work.ctypes.data_as(ctypes.c_void_p), ctypes.byref(integer(lwork)),
                     iwork.ctypes.data_as(ctypes.c_void_p), ctypes.byref(integer(liwork)), ctypes.byref(info))

        call(-1, -1)  # workspace query
        work, iwork = np.empty(max(1, int(work[0])), np.float64), np.empty(max(1, int(iwork[0])), np.int32)
        call(work.size, iwork.size)
        if info.value != 0:
            log.debug("MKL dsyevd failed (info %d); OpenBLAS instead", info.value)
            return None
        return values

    return solve


@functools.cache
def _openblas() -> tuple[ctypes.CDLL, str, type[ctypes.c_int64] | type[ctypes.c_int32]] | None:
    """numpy's bundled OpenBLAS, its LAPACKE symbol prefix/suffix pattern and integer type."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern, integer in (("scipy_LAPACKE_{}64_", ctypes.c_int64), ("LAPACKE_{}64_", ctypes.c_int64),
                                 ("scipy_LAPACKE_{}", ctypes.c_int32), ("LAPACKE_{}", ctypes.c_int32)):
            if hasattr(library, pattern.format("dsyevd_2stage")):
                return library, pattern, integer
    log.debug("no LAPACKE in numpy's OpenBLAS; scipy's LAPACK instead")
    return None


@functools.cache
def _lapacke(name: str) -> Callable[..., int] | None:
    """``LAPACKE_<name>`` (``dsyevd_2stage``, ``dgesdd``) of numpy's OpenBLAS, or ``None``."""
    found = _openblas()
    if found is None:
        return None
    library, pattern, integer = found
    function = getattr(library, pattern.format(name))
    function.restype = integer
    signatures = {
        "dsyevd_2stage": [ctypes.c_int, ctypes.c_char, ctypes.c_char, integer, ctypes.c_void_p, integer, ctypes.c_void_p],
        "dgesdd": [ctypes.c_int, ctypes.c_char, integer, integer, ctypes.c_void_p, integer, ctypes.c_void_p,
                   ctypes.c_void_p, integer, ctypes.c_void_p, integer],
    }
    function.argtypes = signatures[name]
    return function
