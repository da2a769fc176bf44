"""Fixtures shared by the test modules."""
import pytest

import fastconv


@pytest.fixture
def one_thread():
    """Finite differences run thousands of tiny forward passes. Threads do not change the maths,
    and on a shared, oversubscribed machine OpenMP's spin-waiting makes each tiny parallel call
    cost milliseconds, so these checks run single-threaded to keep the suite's time bounded."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)
