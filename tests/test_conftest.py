"""The suite's own guard (tests/conftest.py, ``_torch_global_state``): a test that changes torch's
global state and does not put it back fails at teardown, naming what it changed, and the tests
after it run with the state restored. Proved by running pytest, with this conftest, on a small
test file: in this process (torch already loaded, as in any run that collects a torch test), and
in a fresh interpreter where the first test is the one to import torch (the guard's import hook)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch  # loaded before pytester snapshots sys.modules: its restore must not unload torch

CONFTEST = Path(__file__).with_name("conftest.py")

_CASES = '''
import os

def _torch():
    import torch  # not at the top: the guard must also cover a test that imports torch first
    return torch

def test_leaks_threads():
    torch = _torch()
    os.environ["SB_THREADS_BEFORE"] = str(torch.get_num_threads())
    torch.set_num_threads(torch.get_num_threads() + 1)

def test_sees_threads_restored():
    assert _torch().get_num_threads() == int(os.environ["SB_THREADS_BEFORE"])

def test_restores_threads_itself():
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(before + 2)
    try:
        pass
    finally:
        torch.set_num_threads(before)

def test_leaks_dtype_and_grad_mode():
    torch = _torch()
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)

def test_sees_dtype_and_grad_mode_restored():
    torch = _torch()
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()

def test_draws_random_numbers_a():
    os.environ["SB_DRAW"] = repr(_torch().rand(3).tolist())

def test_draws_random_numbers_b():  # the RNG is put back silently: the same draw again
    assert repr(_torch().rand(3).tolist()) == os.environ["SB_DRAW"]
'''


def _check(result) -> None:
    result.assert_outcomes(passed=7, errors=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_leaks_threads*",
        "*the test changed torch's global state and did not restore it*",
        "*torch.get_num_threads(): * before the test, * after*",
    ])
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_leaks_dtype_and_grad_mode*",
        "*torch.get_default_dtype(): torch.float32 before the test, torch.float64 after*",
        "*torch.is_grad_enabled(): True before the test, False after*",
    ])
    for name in ("test_restores_threads_itself", "test_sees_threads_restored", "test_draws_random_numbers_b"):
        assert f"teardown of {name}" not in out


def test_a_test_that_leaks_torch_state_fails_and_the_next_ones_see_it_restored(pytester):
    # In this process torch is loaded before the inner tests run, as in a whole-suite or unit run.
    threads = torch.get_num_threads()
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_leaky=_CASES)
    _check(pytester.runpytest_inprocess("-p", "no:cacheprovider"))
    assert torch.get_num_threads() == threads


@pytest.mark.heavy  # a fresh interpreter that imports torch: ~3 s
def test_the_guard_covers_a_test_that_imports_torch_first(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_leaky=_CASES)
    _check(pytester.runpytest_subprocess("-p", "no:cacheprovider"))
