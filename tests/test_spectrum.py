"""Every singular-value route gives each quantity within 1e-5 of float64 svdvals (SPEC §2)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

import probe
from probe import _lapack, linalg, spectrum
from probe.linalg import NUMPY, TORCH
from probe.spectrum import _MIN_STABLE_RANK, ROUTES, _first_routes, singular_values


def matrix_with_condition(rows: int, cols: int, condition: float, seed: int = 0) -> torch.Tensor:
    """A float32 ``rows × cols`` matrix whose singular values are log-spaced from 1 to 1/condition."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -np.log10(condition), rows, dtype=torch.float64)
    return ((u * s) @ v.T).float()


def matrix_with_small_values(rows: int, cols: int, small: int, condition: float, seed: int = 0,
                             cluster: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A ``rows × cols`` matrix with singular values spread over [0.1, 1] except the ``small``
    smallest, log-spaced from ``10/condition`` to ``1/condition`` (all ``1/condition``:
    ``cluster``). Rounded to float32, its condition is ~1e8–4e9 at most: float64 for more."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64))
    s = torch.linspace(1, 0.1, rows, dtype=torch.float64)
    s[rows - small:] = torch.full((small,), 1 / condition) if cluster else torch.logspace(1, 0, small) / condition
    return ((u * s) @ v.T).to(dtype)


def route(matrix: torch.Tensor, **kwargs) -> str:
    (spectrum,) = singular_values([matrix], **kwargs)
    return spectrum.route


def assert_quantities_match(fast: probe.Report, exact: probe.Report, rel: float = 1e-5, *, norm_factor: float = 1.0) -> None:
    """Every quantity of ``fast`` within ``rel`` of ``exact``'s, the norms (spec, fro) times ``norm_factor``."""
    for layer_fast, layer_exact in zip(fast.layers, exact.layers):
        for u, want in layer_exact.unfoldings.items():
            got = layer_fast.unfoldings[u]
            assert len(got.d) == len(want.d), (layer_exact.name, u)
            for variant in ("BE", "AE"):
                for name, value in getattr(want, variant).items():
                    expected = value * norm_factor if name in ("spec", "fro") else value
                    assert getattr(got, variant)[name] == pytest.approx(expected, rel=rel), (layer_exact.name, u, variant, name)


# conditions on each side of the gram32 (cond ≈ 4) and gram64 (cond ≈ 1e5) limits
CONDITIONS = [1.5, 3.9, 4.2, 60.0, 5e4, 2e5, 1e9, 1e12]


@pytest.mark.parametrize("method", ["auto", "gram64"])
@pytest.mark.parametrize("shape", [(200, 1800), (128, 1152), (27, 64), (40, 40), (1, 50)])
@pytest.mark.parametrize("condition", CONDITIONS)
def test_every_route_matches_float64_svdvals(shape, condition, method):
    rows, cols = shape
    w = matrix_with_condition(rows, cols, condition if rows > 1 else 1.0)
    fast = probe.measure({"w.weight": w}, method=method)
    exact = probe.measure({"w.weight": w}, method="svd")
    reference = torch.linalg.svdvals(w.double()).numpy()
    np.testing.assert_allclose(exact.layers[0].unfoldings["out"].s, reference, rtol=1e-9, atol=1e-15)
    assert_values_match(fast.layers[0].unfoldings["out"], reference)
    assert_quantities_match(fast, exact)


def assert_values_match(unfolding: probe.Unfolding, reference: np.ndarray) -> None:
    """Each singular value within 2e-6 of ``reference`` (float64 svdvals), up to LAPACK's
    backward error (each σ within a few ε·‖A‖ of the truth, so at condition 1e12 the smallest
    is only good to ~1e-4 relative in any float64 library: numpy's and torch's differ). On
    ``gram64+min`` only those the Gram resolves (σ ≥ 1.05e-5·σ_1) and the refined σ_min: the
    ones between are only as exact as the quantities need."""
    got = unfolding.s
    atol = 64 * np.finfo(np.float64).eps * reference[0]
    if unfolding.route == "gram64+min":
        resolved = reference >= 1.05e-5 * reference[0]
        np.testing.assert_allclose(got[resolved], reference[resolved], rtol=2e-6, atol=atol)
        got, reference = got[-1:], reference[-1:]
    np.testing.assert_allclose(got, reference, rtol=2e-6, atol=atol)


def test_routes_follow_the_conditioning():
    assert route(matrix_with_condition(64, 576, 2.0)) == "gram32"
    assert route(matrix_with_condition(64, 576, 1e3)) == "gram64"
    assert route(matrix_with_small_values(64, 576, 3, 1e9)) == "gram64+min"  # the 3 smallest refined
    assert route(matrix_with_condition(64, 576, 1e9)) == "gram64+min"  # 28 unresolved values: all refined
    assert route(matrix_with_condition(128, 1152, 1e9)) == "svd"  # 57: too many for the block
    assert route(matrix_with_condition(64, 576, 2.0), method="gram64") == "gram64"
    assert route(matrix_with_small_values(64, 576, 3, 1e9), method="gram64") == "gram64+min"
    assert route(matrix_with_condition(128, 1152, 1e9), method="gram64") == "svd"  # its precision cannot hold
    assert route(matrix_with_small_values(64, 576, 3, 1e9), method="svd") == "svd"
    assert route(matrix_with_condition(64, 576, 2.0), method="svd") == "svd"
    assert route(torch.randn(300, 300)) == "gram64"  # square: gram32 would never hold


@pytest.mark.parametrize("kernels", [NUMPY, TORCH], ids=["numpy", "torch"])
def test_stable_rank_estimate_predicts_gram32(kernels):
    def low(matrix: torch.Tensor) -> bool:
        return kernels.stable_rank(kernels.prepare(matrix)[0]) < _MIN_STABLE_RANK * matrix.shape[0]

    assert low(matrix_with_condition(256, 2304, 3e4))
    assert low(matrix_with_condition(64, 576, 100.0))
    assert low(matrix_with_condition(256, 2304, 10.0))  # random-looking, yet beyond float32
    assert low(matrix_with_condition(512, 3136, 7.0))
    assert not low(matrix_with_condition(256, 2304, 3.0))
    assert not low(torch.randn(64, 576))
    torch.manual_seed(0)
    assert not low(torch.nn.Linear(3072, 768).weight.detach())  # PyTorch's init, L/M = 1/4


def test_beyond_float32_starts_at_gram64_and_the_boundary_gets_the_cholesky_test():
    def first(matrix: torch.Tensor) -> tuple[str, bool]:
        return _first_routes([matrix], [0], "auto", [None])[0]

    assert first(matrix_with_condition(256, 2304, 10.0)) == ("gram64", False)  # no float32 product spent
    assert first(matrix_with_condition(512, 3136, 7.0)) == ("gram64", False)
    assert first(matrix_with_condition(256, 2304, 4.0)) == ("gram32", True)  # at gram32's limit: tested first
    assert first(matrix_with_condition(256, 2304, 3.0)) == ("gram32", False)
    torch.manual_seed(0)
    assert first(torch.nn.Linear(3072, 768).weight.detach()) == ("gram32", False)


@pytest.mark.parametrize(("condition", "hint", "taken"), [
    (1e9, "svd", "svd"),        # straight to svd: no Gram spent
    (1e9, "gram32", "gram64+min"),  # a stale hint falls through to the route that holds
    (1e9, "gram64", "gram64+min"),  # a hint stored before gram64+min existed
    (1e9, "gram64+min", "gram64+min"),
    (1e3, "gram64+min", "gram64"),
    (1e3, "gram32", "gram64"),
    (2.0, "gram64", "gram64"),  # a hint may skip a cheaper route
    (2.0, None, "gram32"),
])
def test_hints_choose_where_to_start_never_the_accuracy(condition, hint, taken):
    w = matrix_with_condition(64, 576, condition) if condition < 1e5 else matrix_with_small_values(64, 576, 3, condition)
    (spectrum,) = singular_values([w], hints=[hint])
    assert spectrum.route == taken
    reference = torch.linalg.svdvals(w.double()).numpy()
    values = spectrum.values if taken != "gram64+min" else spectrum.values[[0, -1]]
    np.testing.assert_allclose(values, reference if taken != "gram64+min" else reference[[0, -1]], rtol=2e-6, atol=0)


def test_measure_passes_the_previous_routes_back():
    w = {"a.weight": matrix_with_condition(32, 288, 1e9).reshape(32, 32, 3, 3), "b.weight": torch.randn(10, 64)}
    first = probe.measure(w)
    assert {u.route for layer in first.layers for u in layer.unfoldings.values()} <= set(ROUTES)
    assert first.layers[0].unfoldings["out"].route == "gram64+min"
    second = probe.measure(w, hints=first)
    assert [u.route for layer in second.layers for u in layer.unfoldings.values()] == \
        [u.route for layer in first.layers for u in layer.unfoldings.values()]
    assert second.network == first.network


def test_rank_deficient_matrix_is_refined_or_takes_the_svd_route():
    w = gaussian(16, 3, 0) @ gaussian(3, 40, 1)
    (spectrum,) = singular_values([w])
    assert spectrum.route in ("gram64+min", "svd")
    np.testing.assert_allclose(spectrum.values[:3], torch.linalg.svdvals(w.double()).numpy()[:3], rtol=1e-6)
    assert spectrum.values[3:].max() < 1e-5 * spectrum.values[0]
    assert_quantities_match(probe.measure({"w.weight": w}), probe.measure({"w.weight": w}, method="svd"))


def with_singular_values(rows: int, cols: int, s: torch.Tensor, seed: int = 0,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64))
    return ((u * s.double()) @ v.T).to(dtype)


def dense_tail(rows: int, cols: int, small: int = 40) -> torch.Tensor:
    """A float64 matrix with singular values spread over [0.1, 1] but the ``small`` smallest,
    1e-6 to 1.004e-6 (0.01 % apart): beyond the float64 Gram, and too close together for
    inverse iteration to separate."""
    s = torch.linspace(1, 0.1, rows, dtype=torch.float64)
    s[rows - small:] = 1e-6 * (1 + 1e-4 * torch.arange(small, 0, -1, dtype=torch.float64))
    return with_singular_values(rows, cols, s, dtype=torch.float64)


def gaussian(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


F64 = torch.float64
# (name, matrix, the route auto must take): each beyond the float64 Gram's bound (condition ≳ 1e5)
REFINED = {
    "few small 1e7 square": (lambda: matrix_with_small_values(256, 256, 3, 1e7), "gram64+min"),
    "few small 1e9 square": (lambda: matrix_with_small_values(256, 256, 3, 1e9), "gram64+min"),
    "float64, few small 1e9 square": (lambda: matrix_with_small_values(256, 256, 3, 1e9, dtype=F64), "gram64+min"),
    "float64, few small 1e10 square": (lambda: matrix_with_small_values(256, 256, 3, 1e10, dtype=F64), None),  # the limit
    "float64, few small 1e12 square": (lambda: matrix_with_small_values(512, 512, 5, 1e12, dtype=F64), "svd"),
    "float64, one small 1e12 square": (lambda: matrix_with_small_values(64, 64, 1, 1e12, dtype=F64), "svd"),
    "few small 1e7 wide": (lambda: matrix_with_small_values(128, 640, 2, 1e7), "gram64+min"),
    "few small 1e8 wide": (lambda: matrix_with_small_values(200, 300, 4, 1e9), "gram64+min"),
    "float64, few small 1e9 wide": (lambda: matrix_with_small_values(200, 300, 4, 1e9, dtype=F64), "gram64+min"),
    "float64, few small 1e10 wide": (lambda: matrix_with_small_values(200, 300, 4, 1e10, dtype=F64), None),
    "float64, few small 1e12 wide": (lambda: matrix_with_small_values(96, 1000, 6, 1e12, dtype=F64), "svd"),
    "cluster of 4 equal": (lambda: matrix_with_small_values(128, 128, 4, 1e9, cluster=True), "gram64+min"),
    "cluster of 12 equal": (lambda: matrix_with_small_values(128, 384, 12, 1e9, cluster=True), "gram64+min"),
    "dense tail of 40": (lambda: dense_tail(256, 384), "svd"),  # no iteration: probe.linalg.may_converge
    "power law i^-3 square": (lambda: with_singular_values(256, 256, torch.arange(1, 257.0) ** -3), None),
    "power law i^-2.5 wide": (lambda: with_singular_values(128, 512, torch.arange(1, 129.0) ** -2.5), None),
    "Gaussian rows scaled i^-1": (lambda: gaussian(512, 512, 0) * torch.arange(1, 513.0)[:, None] ** -1, None),
    "log-spaced 1e7 square": (lambda: matrix_with_condition(128, 128, 1e7), None),
    "log-spaced 1e10 wide": (lambda: matrix_with_condition(100, 700, 1e10), None),
    "rank 20 of 128": (lambda: gaussian(128, 20, 1) @ gaussian(20, 128, 2), None),
    "rank 5 of 64, wide": (lambda: gaussian(64, 5, 3) @ gaussian(5, 300, 4), None),
    # EVBMF's Φ has many local minima on these: a local search moved AE C by 0.2 and 1e-4
    "Gaussian rows scaled over 1e9, 64 x 4096": (lambda: gaussian(64, 4096, 0) * torch.logspace(0, -9, 64)[:, None], None),
    "Gaussian rows scaled over 1e9, 300 x 1000": (lambda: gaussian(300, 1000, 0) * torch.logspace(0, -9, 300)[:, None], None),
}


@pytest.mark.parametrize("scale", [1.0, 2.0**-100, 2.0**100, 1e-30, 1e30])
@pytest.mark.parametrize("case", list(REFINED))
def test_refined_route_matches_float64_svdvals(case, scale):
    """Every quantity within 1e-5 of float64 svdvals where the Gram cannot resolve the smallest
    singular values: refined (gram64+min) or, where that cannot hold, handed to svd. At scales
    2**±100 (exact: the same matrix, the same route) and 1e±30 (rounded again to the dtype: a
    slightly different matrix, whose tiny singular values, and so its route, may differ)."""
    make, expected = REFINED[case]
    exact = float(np.frexp(scale)[0]) == 0.5
    w = {"w.weight": make() * scale if exact else (make().double() * scale).to(make().dtype)}
    fast = probe.measure(w)
    unfolding = fast.layers[0].unfoldings["out"]
    assert unfolding.route == expected if expected and exact else unfolding.route in ("gram64", "gram64+min", "svd")
    assert_quantities_match(fast, probe.measure(w, method="svd"))
    assert_values_match(unfolding, torch.linalg.svdvals(w["w.weight"].double()).numpy())


@pytest.mark.parametrize("make, converges", [(lambda: dense_tail(256, 256), False), (lambda: dense_tail(256, 384), False),
                                             (lambda: matrix_with_small_values(256, 256, 3, 1e9), True),
                                             (lambda: matrix_with_small_values(128, 384, 12, 1e9, cluster=True), True),
                                             (lambda: matrix_with_small_values(200, 300, 4, 1e9), True)])
def test_iteration_is_skipped_only_where_the_grams_values_rule_it_out(make, converges):
    """``may_converge`` from the Gram's values: False for a dense tail (then the iteration,
    given its chance, does not converge either), True where it converges."""
    a, _ = NUMPY.prepare(make())
    eig = NUMPY.gram_eigenvalues(a, double=True)
    count = int(np.searchsorted(eig, spectrum._MIN_RATIO["gram64"] * eig[-1]))
    assert count > 0
    assert linalg.may_converge(eig, count, spectrum._gram_spread(eig)) is converges
    assert NUMPY.smallest_or_all(a, count)[1] is converges


@pytest.mark.parametrize("shape", [(256, 256), (256, 384)])
def test_a_dense_tail_takes_svd_without_a_factor_for_the_iteration(shape, monkeypatch):
    """No LU (or QR) and no iteration is spent where ``may_converge`` rules them out."""
    assert_svd_without_a_factor(dense_tail(*shape), monkeypatch)


def assert_svd_without_a_factor(w: torch.Tensor, monkeypatch) -> None:
    """``w`` takes the ``svd`` route without ``smallest_or_all`` (the LU or QR and the
    iteration), and its values are float64 ``svdvals``'."""

    def fail(*args, **kwargs):
        raise AssertionError("smallest_or_all called")

    monkeypatch.setattr(type(NUMPY), "smallest_or_all", fail)
    (result,) = singular_values([w])
    assert result.route == "svd"
    np.testing.assert_allclose(result.values, torch.linalg.svdvals(w).numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("shape", [(400, 400), (120, 300)])
def test_an_ill_conditioned_tail_takes_svd_without_a_factor_for_the_iteration(shape, monkeypatch):
    """Singular values evenly spread in log over 1e9: about half lie beyond the float64 Gram.
    The iteration would refine at most 30 of them; the rest, each anywhere in its interval,
    move ``C_AE`` too far (EVBMF's smallest kept value sits near its threshold), even with the
    refined ones exact: so no factor is computed for it (wide, or square from 400 rows on),
    and the matrix goes to ``svd``."""
    from probe.linalg import refinable
    from probe.spectrum import _MIN_RATIO, _unrefined_hold

    rows, cols = shape
    w = with_singular_values(rows, cols, torch.logspace(0, -9, rows, dtype=torch.float64), dtype=torch.float64)
    eig = NUMPY.gram_eigenvalues(w.numpy(), double=True)
    count = int(np.searchsorted(eig, _MIN_RATIO["gram64"] * eig[-1]))
    refined = refinable(rows, count)
    assert count > refined
    values = np.sqrt(np.maximum(eig, 0.0))
    values[:refined] = np.sort(torch.linalg.svdvals(w).numpy())[:refined]  # as the iteration would give them
    assert not _unrefined_hold(values, eig, refined, count, cols)  # the check after the iteration fails too
    assert_svd_without_a_factor(w, monkeypatch)


def test_exactly_singular_square_matrix_takes_the_svd_route():
    w = matrix_with_small_values(64, 64, 2, 1e9)
    w[5] = 0.0  # an exact zero pivot for LU
    (spectrum,) = singular_values([w])
    assert spectrum.route == "svd"
    assert_quantities_match(probe.measure({"w.weight": w}), probe.measure({"w.weight": w}, method="svd"))


def test_batched_groups_keep_input_order():
    mats = [torch.randn(8, 20), torch.randn(5, 9), torch.randn(8, 20) * 3]
    for got, m in zip(singular_values(mats), mats):
        np.testing.assert_allclose(got.values, torch.linalg.svdvals(m.double()).numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast_per_matrix(dtype):
    w = torch.randn(32, 288).to(dtype)
    (spectrum,) = singular_values([w])
    np.testing.assert_allclose(spectrum.values, torch.linalg.svdvals(w.double()).numpy(), rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        singular_values([torch.randn(2, 3)], method="lapack")
    with pytest.raises(ValueError, match="orient"):
        singular_values([torch.randn(5, 3)])
    with pytest.raises(ValueError, match="hints"):
        singular_values([torch.randn(2, 3)], hints=[None, None])
    with pytest.raises(ValueError, match="hint 0 is 'fast'"):
        singular_values([torch.randn(2, 3)], hints=["fast"])


@pytest.mark.parametrize("condition", [2.0, 1e3, 1e9])
def test_torch_kernels_agree_with_numpy_kernels(condition):
    """The kernels other devices use (torch) give the CPU's (numpy's) values; run here on the CPU."""
    w = matrix_with_condition(48, 432, condition) * 2.0**40  # also exercises the scaling
    (a_np, e_np), (a_t, e_t) = NUMPY.prepare(w), TORCH.prepare(w)
    assert e_np == e_t == np.frexp(float(w.abs().max()))[1] > 32
    reference = torch.linalg.svdvals(w.double()).numpy() * 2.0**-e_np
    for double in (False, True):
        np.testing.assert_allclose(TORCH.gram_eigenvalues(a_t, double), NUMPY.gram_eigenvalues(a_np, double),
                                   rtol=1e-5, atol=1e-6 * reference[0] ** 2)
    np.testing.assert_allclose(TORCH.svd_values(a_t), reference, rtol=1e-7)
    np.testing.assert_allclose(NUMPY.svd_values(a_np), reference, rtol=1e-7)
    for a_t_, a_np_ in ((a_t, a_np), (a_t[:, :48], a_np[:, :48])) if condition > 1e5 else ():  # wide (QR), square (LU)
        smallest = torch.linalg.svdvals(a_t_.double()).numpy()[::-1][:6]
        for got, refined in (TORCH.smallest_or_all(a_t_, 6), NUMPY.smallest_or_all(a_np_, 6)):
            assert refined
            np.testing.assert_allclose(got, smallest, rtol=1e-7, atol=4 * np.finfo(np.float64).eps * reference[0])
    assert TORCH.stable_rank(a_t) == pytest.approx(NUMPY.stable_rank(a_np), rel=1e-4)


def test_torch_float64_gram_is_summed_from_chunks():
    """On devices the float64 Gram of a float32 matrix comes from 1024-column chunks (no float64 copy of it all)."""
    a = torch.randn(30, 2500, generator=torch.Generator().manual_seed(0))
    exact = a.double() @ a.double().T
    torch.testing.assert_close(linalg._torch_gram(a, torch.float64), exact, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(linalg._torch_gram(a, torch.float32), a @ a.T)


def test_each_worker_gets_its_share_of_mkls_threads(monkeypatch):
    """Several matrices in flight: MKL on one thread in each worker; one matrix alone: all threads."""
    max_threads = _lapack._mkl("MKL_Get_Max_Threads")
    if max_threads is None:
        pytest.skip("torch has no MKL here")
    max_threads.restype = ctypes.c_int
    seen: list[int] = []
    solve = spectrum._solve

    def observed(*args):
        seen.append(max_threads())
        return solve(*args)

    monkeypatch.setattr(spectrum, "_solve", observed)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        singular_values([torch.randn(64, 96), torch.randn(48, 80)])
        assert seen == [1, 1]
        seen.clear()
        singular_values([torch.randn(64, 96)])
        assert seen == [2]
    finally:
        torch.set_num_threads(before)


def test_cpu_matrices_are_spread_over_threads_in_input_order():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        mats = [matrix_with_condition(rows, 3 * rows, c, seed=rows) for rows in (16, 64, 32, 8) for c in (2.0, 1e9)]
        spectra = singular_values(mats)
    finally:
        torch.set_num_threads(before)
    assert [s.route for s in spectra][::2] == ["gram32"] * 4
    assert {s.route for s in spectra[1::2]} <= {"gram64+min", "svd"}
    for got, m in zip(spectra, mats):
        np.testing.assert_allclose(got.values[[0, -1]], torch.linalg.svdvals(m.double()).numpy()[[0, -1]], rtol=2e-6)


@pytest.mark.parametrize("kernels", [NUMPY, TORCH], ids=["numpy", "torch"])
def test_cholesky_test_rejects_before_solving_only_what_would_fail(kernels):
    floor = 0.9 * 0.0596  # as auto uses it for gram32: λ_min/λ_max ≥ 0.0596 is kept
    kept, failing = matrix_with_condition(128, 1152, 3.0), matrix_with_condition(128, 1152, 10.0)
    eig = kernels.gram_eigenvalues(kernels.prepare(kept)[0], False, floor=floor)
    assert eig is not None
    np.testing.assert_allclose(np.sqrt(eig[::-1]), torch.linalg.svdvals(kept.double()).numpy(), rtol=2e-6)
    assert kernels.gram_eigenvalues(kernels.prepare(failing)[0], False, floor=floor) is None
    assert route(failing) == "gram64"  # random-looking (stable rank ≈ 0.3 L): tried, rejected early


def test_a_trained_model_skips_the_estimate_after_its_four_largest_matrices():
    trained = [matrix_with_condition(96, 864, 1e3, seed=s) for s in range(4)]  # stable rank ≈ 0.15 L
    small = matrix_with_condition(16, 144, 2.0)
    # four large matrices all look trained: the small one goes straight to gram64, no estimate
    assert [s.route for s in singular_values([small, *trained])] == ["gram64"] * 5
    # three are not enough evidence: the small one is estimated, and gram32 holds for it
    assert [s.route for s in singular_values([small, *trained[:3]])] == ["gram32"] + ["gram64"] * 3


def test_numpy_blas_threads_are_limited_while_measuring_and_restored_after():
    from threadpoolctl import threadpool_info

    from probe.linalg import single_threaded_blas

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    with single_threaded_blas():
        with single_threaded_blas():  # nested (and concurrent) uses share one limit
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
    singular_values([torch.randn(8, 20)])
    assert blas_threads() == before
