"""Limits and crashes: each costs the affected call only, with a reason; the rest is graded normally.

Every hostile case here is bounded by :data:`hostile.cases.HOSTILE_LIMITS` (10 s per call, 3 s of
CPU, 4.5 GB of address space, 2 MB of output, 32 processes); the fork bomb runs only where the
worker has a uid of its own (the process limit counts a whole user, and does not hold for root).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hostile import cases, notebooks

from gradcam_kit.grading.notebook import read_submission
from gradcam_kit.host.session import Limits, ModelSpec, WorkerSession

RESTARTING = {"exit", "crash", "timeout", "cpu", "memory", "output", "processes"}


def _runnable(case: cases.HostileCall, session: WorkerSession) -> bool:
    """The fork bomb runs only where the process limit holds: a worker with a uid of its own."""
    return not case.needs_unprivileged or session.uid is not None


@pytest.fixture(scope="module")
def hostile(course, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    source = notebooks.write(notebooks.source_notebook(), folder / "source" / "TP2_GradCAM.ipynb")
    top = notebooks.SOLUTIONS["top_and_least"] + "".join(case.code for case in cases.RUNTIME)
    student = notebooks.write(notebooks.submission(replace={"top_and_least": top, "show_grad_cam": cases.WRONG_NAME}),
                              folder / "mallory" / "n.ipynb")
    program = read_submission(student, source)
    with WorkerSession(program, course.images_dir, course.helper_module, limits=cases.HOSTILE_LIMITS) as worker:
        load = worker.load()
        assert load.fatal is None and not load.ok
        assert load.defined == {name: name != "show_grad_cam" for name in notebooks.FUNCTIONS}
        assert load.errors["show_grad_cam"].startswith(cases.WRONG_NAME_ERROR)
        yield worker


@pytest.mark.parametrize("case", cases.RUNTIME, ids=lambda case: case.name)
def test_each_hostile_call_fails_with_its_reason(hostile, case):
    if not _runnable(case, hostile):
        pytest.skip("the process limit holds only for a worker with a uid of its own (grader run as root)")
    started = time.monotonic()
    outcome = hostile.call(f"hostile_{case.name}")
    assert not outcome.ok and outcome.value is None
    assert outcome.failure == case.failure, outcome.error
    for fragment in case.fragments:
        assert fragment in outcome.error, outcome.error
    assert "Traceback" not in outcome.error and "gradcam_kit" not in outcome.error
    # bounded: the call limit plus a worker restart, never more
    assert time.monotonic() - started < cases.HOSTILE_LIMITS.call_seconds + cases.HOSTILE_LIMITS.startup_seconds

    # the next call is answered normally, by a new worker when this one had to go
    before = hostile.restarts
    after = hostile.call("top_and_least", np.array([[1.0, 3.0, 2.0]]))
    assert after.ok and after.value == [1, 2, 0, 0], after.error
    restarted = case.failure in RESTARTING and case.name != "sys_exit"  # sys.exit is an exception
    assert hostile.restarts - before == int(restarted)


def test_the_rest_is_graded_normally_after_all_that(hostile):
    gradients = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    outcome = hostile.call("channel_weights", gradients)
    assert outcome.ok, outcome.error
    np.testing.assert_allclose(outcome.value["array"], gradients.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    hooks = hostile.probe_hooks(ModelSpec("resnet18", "random"), "layer4", np.zeros((1, 3, 64, 64), np.float32), 1)
    assert hooks.ok, hooks.error
    assert hostile.restarts <= cases.HOSTILE_LIMITS.max_restarts


def test_a_notebook_whose_cells_fail_while_loading(course, tmp_path):
    """A crash, an infinite loop and forged messages at the top level of three cells cost those three
    functions only."""
    source = notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")
    student = notebooks.write(notebooks.submission(replace=cases.LOAD_CELLS), tmp_path / "bob" / "n.ipynb")
    program = read_submission(student, source)
    with WorkerSession(program, course.images_dir, course.helper_module, limits=cases.LOAD_LIMITS) as worker:
        load = worker.load()
        assert load.fatal is None and not load.ok
        for function, (fragment, callable_) in cases.LOAD_EXPECTED.items():
            assert load.defined[function] is callable_, (function, load.errors.get(function))
            if fragment is not None:
                assert fragment in load.errors[function], load.errors[function]
                outcome = worker.call(function)
                assert not outcome.ok and outcome.failure == "unavailable"
                assert fragment in outcome.error
        assert any("left-over test code" in note for note in load.notes)
        assert worker.restarts == 3  # one per cell that killed the worker, then never again
        assert worker.call("top_and_least", np.array([[3.0, 1.0, 2.0]])).value == [0, 2, 1, 1]
        hooks = worker.probe_hooks(ModelSpec("resnet18", "random"), "layer4", np.zeros((1, 3, 64, 64), np.float32), 0)
        assert hooks.ok, hooks.error  # the second definition of register_gradcam_hooks won


def test_a_limit_hit_while_setting_up_fails_every_call_at_once(course, tmp_path):
    source_notebook = notebooks.source_notebook()
    for cell in source_notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "setup_data":
            cell.source = "while True:\n    pass\n"
    source = notebooks.write(source_notebook, tmp_path / "source" / "TP2_GradCAM.ipynb")
    student = notebooks.write(notebooks.submission(), tmp_path / "carol" / "n.ipynb")
    program = read_submission(student, source)
    with WorkerSession(program, course.images_dir, course.helper_module, limits=Limits(call_seconds=3)) as worker:
        load = worker.load()
        assert load.fatal == ("The grader could not run your notebook: it timed out after 3 s while running the "
                              "cell `setup_data`.")
        assert load.defined == {name: False for name in notebooks.FUNCTIONS} and load.failure == "grader"
        started = time.monotonic()
        for name in notebooks.FUNCTIONS:
            outcome = worker.call(name, np.zeros(1))
            # the source's own setup cell, before any of the student's: the grader's fault, never charged
            assert not outcome.ok and outcome.error == load.fatal and outcome.failure == "grader"
        assert time.monotonic() - started < 1.0 and worker.restarts == 0


def test_an_unreadable_notebook_starts_no_worker(course, tmp_path):
    source = notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")
    broken = tmp_path / "dave" / "n.ipynb"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with WorkerSession(read_submission(broken, source), course.images_dir, course.helper_module) as worker:
        load = worker.load()
        assert "not valid JSON" in load.fatal and load.seconds == 0.0
        outcome = worker.call("grad_cam")
        assert not outcome.ok and "not valid JSON" in outcome.error
        assert worker._process is None
