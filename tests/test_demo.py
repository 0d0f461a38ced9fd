"""``gradcam-kit demo`` end to end, with the real notebook, judge and worker (slow: about a minute).

It is kept to three submissions: the solution, the untouched release and one buggy notebook.
"""

from __future__ import annotations

import csv
import io

import pytest

from gradcam_kit.course import ASSIGNMENT, Course
from gradcam_kit.demo import DEMO_MARK, prepare_scratch, run_demo
from gradcam_kit.errors import KitError
from fake_course import REPO_ROOT, gradebook_scores, tree_hashes


def test_demo_releases_grades_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADCAM_WEIGHTS", "random")
    scratch = tmp_path / "demo"
    out = io.StringIO()

    status = run_demo(Course.locate(REPO_ROOT), scratch, out=out, workers=2, buggy=1)

    text = out.getvalue()
    assert status == 0, text
    assert "GRADCAM_WEIGHTS=random" in text and "mean nothing" in text
    demo = Course.locate(scratch)
    assert (demo.release_dir / "TP2_GradCAM.ipynb").is_file()
    with (demo.grades_dir / f"{ASSIGNMENT}.csv").open() as stream:
        rows = {row["student_id"]: row for row in csv.DictReader(stream)}
    assert len(rows) == 3 and {"solution", "untouched_release"} <= set(rows)
    solution, untouched = rows["solution"], rows["untouched_release"]
    assert float(solution["autograded_score"]) == float(solution["autograded_max"]) > 0
    assert float(untouched["autograded_score"]) == 0
    buggy = next(row for name, row in rows.items() if name.startswith("bug_"))
    assert 0 < float(buggy["autograded_score"]) < float(buggy["autograded_max"])
    for student in rows:
        page = (demo.grades_dir / "feedback" / f"{student}.html").read_text()
        assert "test_grad_cam" in page
    assert "data:image/png;base64," in (demo.grades_dir / "feedback" / "solution.html").read_text()
    assert (demo.grades_dir / f"{ASSIGNMENT}_scores.png").read_bytes().startswith(b"\x89PNG")
    assert set(gradebook_scores(demo)) == set(rows)
    for expected in ("feedback pages", "histogram", str(demo.grades_dir / "feedback")):
        assert expected in text


def test_demo_uses_random_weights_offline_and_says_so(tmp_path, monkeypatch):
    from gradcam_kit.demo import choose_weights

    monkeypatch.delenv("GRADCAM_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-cache"))
    policy, sentence = choose_weights(Course.locate(REPO_ROOT))
    assert policy == "random"
    assert "not cached" in sentence and "GRADCAM_WEIGHTS=random" in sentence

    monkeypatch.setenv("GRADCAM_WEIGHTS", "imagenet")
    with pytest.raises(KitError, match="offline"):
        choose_weights(Course.locate(REPO_ROOT))


def test_demo_never_overwrites_a_folder_it_did_not_make(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    before = tree_hashes(precious)
    with pytest.raises(KitError, match="not a demo course"):
        prepare_scratch(precious)
    assert tree_hashes(precious) == before

    demo = tmp_path / "demo"
    prepare_scratch(demo)
    (demo / "old-output").write_text("x")
    prepare_scratch(demo)
    assert sorted(p.name for p in demo.iterdir()) == [DEMO_MARK]
