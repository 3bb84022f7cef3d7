"""Fingerprints run their hashing products on one BLAS thread and restore the count."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_limits

from movingtarget._threads import one_blas_thread
from movingtarget.memory import ExactFingerprint


def _blas_threads() -> list[int]:
    return [c.num_threads for c in ThreadpoolController().select(user_api="blas").lib_controllers]


def test_one_blas_thread_inside_and_the_count_restored_after_an_error() -> None:
    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        assert before and max(before) == 2  # numpy here is linked to a BLAS
        with pytest.raises(RuntimeError), one_blas_thread():
            assert _blas_threads() == [1] * len(before)
            raise RuntimeError("inside")
        assert _blas_threads() == before


def test_a_large_batch_fingerprint_leaves_the_blas_threads_as_they_were() -> None:
    x = np.random.default_rng(0).random((2048, 784), dtype=np.float32)
    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        keys = ExactFingerprint(b"s").fingerprint(x)
        assert _blas_threads() == before
    assert len(np.unique(keys)) == 2048


def test_a_blas_library_loaded_later_is_limited_too() -> None:
    with one_blas_thread():
        pass
    import scipy.linalg  # noqa: F401 -- scipy brings its own BLAS

    with threadpool_limits(2, user_api="blas"), one_blas_thread():
        assert set(_blas_threads()) == {1}
