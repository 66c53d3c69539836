"""Shampoo's inverse roots and SOAP's bases batched over factors of equal size (``_matrix``):
the same roots as one ``matrix_inverse_root`` call per factor, to rounding; a failed or
non-finite factor is reported in its place without spoiling the batch; and Shampoo and SOAP
runs whose factors share sizes are unchanged by the batching."""

import torch

import optlib
from optlib.optim._matrix import EighError, matrix_inverse_root, matrix_inverse_roots

from ._parity import assert_close_lists, clone_params, make_params, run


def gram(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2 * n, generator=g, dtype=dtype)
    return X @ X.T


def test_batched_roots_equal_one_call_per_matrix():
    mats = [gram(n, s) for s, n in enumerate([5, 5, 8, 5, 8, 1, 5])]
    mats.append(gram(5, 99, torch.float32))  # another dtype: a batch of its own
    rs = [4, 4, 4, 2, 4, 2, 4, 4]
    got = matrix_inverse_roots(mats, rs, 1e-8)
    for A, r, root in zip(mats, rs, got):
        expected = matrix_inverse_root(A, r, 1e-8)
        assert root.dtype == A.dtype and root.shape == A.shape
        tol = 1e-12 if A.dtype == torch.float64 else 1e-5
        torch.testing.assert_close(root, expected, rtol=tol, atol=tol * expected.abs().max())


def test_a_non_finite_matrix_is_reported_and_the_others_still_computed():
    bad = torch.full((5, 5), float("nan"), dtype=torch.float64)
    got = matrix_inverse_roots([gram(5, 0), bad, gram(5, 1)], [4, 4, 4], 1e-8)
    assert isinstance(got[1], EighError)
    torch.testing.assert_close(got[0], matrix_inverse_root(gram(5, 0), 4, 1e-8))
    torch.testing.assert_close(got[2], matrix_inverse_root(gram(5, 1), 4, 1e-8))


def test_shampoo_with_many_equal_blocks_is_unchanged_by_batching(monkeypatch):
    """Blocks of 4 on 12x8 and 8x8 weights: many factors of size 4 share one batched call. The
    same run with the batch forced to one matrix per call agrees to rounding."""
    p0 = make_params([(12, 8), (8, 8), (8,)], seed=3)
    kw = dict(lr=0.05, max_preconditioner_dim=4, merge_dims=False, epsilon=1e-10)
    batched = run(lambda ps: optlib.Shampoo(ps, **kw), clone_params(p0), 6)

    from optlib.optim import shampoo

    def one_at_a_time(matrices, rs, epsilon):
        return [matrix_inverse_roots([A], [r], epsilon)[0] for A, r in zip(matrices, rs)]

    calls = []
    monkeypatch.setattr(
        shampoo,
        "matrix_inverse_roots",
        lambda m, r, e: calls.append(len(m)) or one_at_a_time(m, r, e),
    )
    single = run(lambda ps: optlib.Shampoo(ps, **kw), clone_params(p0), 6)
    assert max(calls) >= 2 * (12 // 4) * (8 // 4)  # one call carried every block's factors
    assert_close_lists(batched, single, rtol=1e-12, atol=1e-14)


def test_soap_bases_are_unchanged_by_batching(monkeypatch):
    """SOAP's first eigenbases and its QR refreshes, batched over the factors of every tensor
    that is due, against one decomposition per factor: the same run."""
    from optlib.optim import soap
    from optlib.optim._matrix import qr_bases, symmetric_eighs

    p0 = make_params([(6, 6), (6, 6), (6, 4), (4, 6)], seed=5)
    kw = dict(lr=0.01, precondition_frequency=2, weight_decay=0.0)
    batched = run(lambda ps: optlib.SOAP(ps, **kw), clone_params(p0), 9)
    sizes = []

    def each(fn):
        def one_at_a_time(matrices):
            sizes.append(len(matrices))
            return [fn([A])[0] for A in matrices]

        return one_at_a_time

    monkeypatch.setattr(soap, "symmetric_eighs", each(symmetric_eighs))
    monkeypatch.setattr(soap, "qr_bases", each(qr_bases))
    single = run(lambda ps: optlib.SOAP(ps, **kw), clone_params(p0), 9)
    assert max(sizes) >= 8  # one call carried the factors of all four tensors
    assert_close_lists(batched, single, rtol=1e-12, atol=1e-14)
