"""Tests of the SDK. The Python package is imported from the source tree
(sdk/python), so they test this checkout whatever version the venv has;
helpers: sdk_testenv (paths), python/fake_daemon.py (a scripted FJD01 peer),
e2e/fjordd.py (a real daemon process)."""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
for p in (HERE.parents[1] / "sdk" / "python", HERE, HERE / "python", HERE / "e2e"):
    sys.path.insert(0, str(p))


import signal  # noqa: E402

import pytest  # noqa: E402

# No SDK test may hang the suite: each gets at most this long (pytest-timeout
# is not in the venv), then fails with a traceback of where it was waiting.
TEST_TIMEOUT_S = 480


@pytest.fixture(autouse=True)
def _bounded_test_time(request):
    def expired(signum, frame):
        raise TimeoutError(f"{request.node.nodeid} ran longer than {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
