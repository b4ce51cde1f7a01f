"""The in-place CPU kernels agree with numpy's on every memory layout (issue 24)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from probe import _lapack
from probe._lapack import eigvalsh_lower, gram_lower, mkl_threads, svdvals_inplace, upcast_lower

LAYOUTS = {
    "C": np.ascontiguousarray,
    "F": np.asfortranarray,
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
}


@contextmanager
def engine_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def matrix(rows: int, cols: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(rows * cols)
    return (rng.standard_normal((rows, cols)) * np.logspace(0, -3, rows)[:, None]).astype(dtype)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape", [(37, 300), (80, 90), (1, 7), (520, 1100)])  # the last: a memory-mapped Gram, 3 dgemm blocks
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_and_eigenvalues_match_numpy(layout, shape, dtype):
    a = LAYOUTS[layout](matrix(*shape, dtype))
    exact = np.linalg.eigvalsh(a.astype(np.float64) @ a.astype(np.float64).T)
    for double, threads in ((True, 1), (True, 2), (False, 1)):  # float64: OpenBLAS's dsyrk, MKL's dgemm
        with engine_threads(threads):
            gram = gram_lower(a, double)
        assert gram.flags.f_contiguous and gram.dtype == (np.float64 if double else np.float32)
        full = a.astype(gram.dtype) @ a.astype(gram.dtype).T
        np.testing.assert_allclose(np.tril(gram), np.tril(full), rtol=1e-5 if not double else 1e-12, atol=1e-6 * full.max())
        tolerance = 1e-12 if double else 1e-5
        np.testing.assert_allclose(eigvalsh_lower(gram), exact, rtol=0, atol=tolerance * exact[-1])


@pytest.mark.parametrize("order", ["F", "C"])
def test_upcast_copies_the_lower_triangle_into_float64(order):
    """gram32's Gram reaches the eigensolver as a float64 copy of its lower triangle (600²:
    a memory-mapped one), not as a float64 copy of the whole matrix."""
    gram = np.arange(600 * 600, dtype=np.float32).reshape(600, 600).copy(order=order)
    upcast = upcast_lower(gram)
    assert upcast.dtype == np.float64 and upcast.flags.f_contiguous
    np.testing.assert_array_equal(np.tril(upcast), np.tril(gram).astype(np.float64))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape", [(37, 300), (80, 90), (64, 64), (1, 7)])
def test_singular_values_match_numpy(layout, shape):
    a = LAYOUTS[layout](matrix(*shape, np.float32))
    before = a.copy()
    values = svdvals_inplace(a, 1.5)
    np.testing.assert_allclose(values, np.linalg.svd(a.astype(np.float64), compute_uv=False), rtol=1e-10)
    np.testing.assert_array_equal(a, before)  # the input is never overwritten


def test_mkl_threads_are_set_inside_and_restored_after():
    max_threads = _lapack._mkl("MKL_Get_Max_Threads")
    if max_threads is None:
        pytest.skip("torch has no MKL here")
    max_threads.restype = ctypes.c_int
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with mkl_threads(1):
            assert max_threads() == 1
            with mkl_threads(2):
                assert max_threads() == 2
            assert max_threads() == 1
        assert max_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_ctypes_kernels_in_a_subprocess():
    """The kernels called through ctypes (MKL's dsyevd and OpenBLAS's LAPACKE dsyevd_2stage,
    each at an order where it is the one used; MKL's dgeqrf and OpenBLAS's dgesdd) at sizes where a
    wrong call corrupts memory: in a child, against numpy."""
    code = (
        "import numpy as np\n"
        "from probe._lapack import gram_lower, eigvalsh_lower, svdvals_inplace\n"
        "a = np.random.default_rng(0).standard_normal((1130, 1300)).astype(np.float32)\n"
        "errors = []\n"
        "for rows in (700, 1100, 1130):\n"
        "    gram = gram_lower(a[:rows], True)\n"
        "    want = np.linalg.eigvalsh(np.tril(gram) + np.tril(gram, -1).T)\n"
        "    errors.append(np.abs(eigvalsh_lower(gram) - want).max() / want[-1])\n"
        "a = a[:1100]\n"
        "for b in (np.asfortranarray(a[:400, :1300]), a[:400, :1300].copy(), a[:, :1200].copy(), np.asfortranarray(a[:, :1300])):\n"
        "    want = np.linalg.svd(b.astype(np.float64), compute_uv=False)\n"
        "    errors.append(np.abs(svdvals_inplace(b, 1.5) / want - 1).max())\n"
        "print(max(errors))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1e-12


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape", [(37, 300), (1, 20), (64, 65)])
def test_triangular_factor_folds_column_blocks(layout, shape, monkeypatch):
    """A wide matrix's factor R (Aᵀ = QR) from its first L columns and then blocks of 7 (the
    last one partial): RᵀR = A Aᵀ, zeros below the diagonal, the input untouched."""
    monkeypatch.setattr(_lapack, "_QR_BLOCK", 7)
    a = LAYOUTS[layout](matrix(*shape, np.float32))
    before = a.copy()
    r = _lapack.triangular_factor(a)
    assert r.shape == (shape[0], shape[0]) and r.dtype == np.float64 and r.flags.f_contiguous
    np.testing.assert_array_equal(np.tril(r, -1), 0.0)
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(r.T @ r, a64 @ a64.T, rtol=0, atol=1e-13 * np.abs(a64 @ a64.T).max())
    np.testing.assert_allclose(np.linalg.svd(r, compute_uv=False), np.linalg.svd(a64, compute_uv=False), rtol=1e-11)
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("mkl", [True, False])
def test_factors_with_and_without_mkl(mkl, monkeypatch):
    """The LU solver and the wide QR factor give the same results on MKL (torch's, through
    ctypes) and on scipy's LAPACK (where torch has no MKL); a singular matrix has no LU solver."""
    if not mkl:
        monkeypatch.setattr(_lapack, "_mkl", lambda name: None)
    elif _lapack._mkl("dgetrf_") is None:
        pytest.skip("torch has no MKL here")
    a = np.asfortranarray(matrix(90, 90, np.float32))  # Fortran order: the solver's F is a itself
    x = np.random.default_rng(1).standard_normal((90, 5))
    solve = _lapack.lu_solver(a)
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(a64 @ solve(x, False), x, atol=1e-9)
    np.testing.assert_allclose(a64.T @ solve(x, True), x, atol=1e-9)
    singular = a.copy()
    singular[3] = 0.0
    assert _lapack.lu_solver(singular) is None
    wide = matrix(40, 100, np.float32).astype(np.float64)
    r = _lapack.triangular_factor(wide)
    np.testing.assert_allclose(r.T @ r, wide @ wide.T, atol=1e-13 * np.abs(wide @ wide.T).max())
