"""The pieces of ``gradcam-kit grade`` that need no judge: CSV, pages, figures, progress bar."""

from __future__ import annotations

import io

import numpy as np

from gradcam_kit.grading import reports
from gradcam_kit.progress import ProgressBar


def results(**points: tuple[float, float]) -> dict:
    return {
        "notes": ["a note <b>with markup</b>"],
        "tests": {
            name: {"outcome": "passed" if got == possible else "failed", "points": got, "max_points": possible,
                   "feedback": "" if got == possible else f"{name} is wrong <script>"}
            for name, (got, possible) in points.items()
        },
    }


def test_csv_has_one_column_per_test_and_the_totals():
    below = {"isolation": "process", "isolation_policy": {"level": "process", "strongest": "bwrap",
                                                          "requested": "process", "below_strongest": True}}
    text = reports.csv_text(
        {"bob": {**results(test_a=(0.0, 1.0), test_b=(1.5, 2.0)), **below},
         "alice": {**results(test_a=(1.0, 1.0), test_b=(2.0, 2.0)), "isolation": "bwrap"}},
        ["test_a", "test_b"],
    )
    assert text.splitlines() == [
        "student_id,test_a,test_b,autograded_score,autograded_max,isolation",
        "alice,1,2,3,3,bwrap",
        "bob,0,1.5,1.5,3,process (below bwrap)",
    ]


def test_csv_leaves_a_missing_test_empty():
    text = reports.csv_text({"carol": results(test_a=(1.0, 1.0))}, ["test_a", "test_b"])
    assert text.splitlines()[1] == "carol,1,,1,1,"


def test_feedback_page_escapes_everything_and_embeds_the_heatmap():
    page = reports.feedback_html("eve<1>", "TP2", results(test_a=(0.0, 1.0)), b"\x89PNGfake", ["kit note"])
    assert "eve&lt;1&gt;" in page and "eve<1>" not in page
    assert "test_a is wrong &lt;script&gt;" in page and "<script>" not in page
    assert "a note &lt;b&gt;with markup&lt;/b&gt;" in page and "kit note" in page
    assert "data:image/png;base64,iVBOR2Zha2U=" in page
    assert "0 / 1" in page


def test_feedback_page_renders_code_spans_and_keeps_escaping():
    tests = {"test_a": {"outcome": "failed", "points": 0.0, "max_points": 1.0,
                        "feedback": "`grad_cam(model, image, 5, model.features)` failed: `a<b>` and a lone ` here"}}
    page = reports.feedback_html("eve", "TP2", {"tests": tests, "notes": ["the locked cell `setup_model` changed"]}, None)
    assert "<code>grad_cam(model, image, 5, model.features)</code>" in page
    assert "<code>a&lt;b&gt;</code>" in page and "a lone ` here" in page
    assert "<li>the locked cell <code>setup_model</code> changed</li>" in page
    assert "`grad_cam" not in page


def test_feedback_page_has_no_empty_notes_section():
    page = reports.feedback_html("eve", "TP2", {"tests": {}, "notes": []}, None)
    assert "Notes" not in page and "none" not in page


def test_feedback_page_explains_the_conventions_it_names():
    remark = ("At `features` your hooks recorded the output after DenseNet's in-place ReLU (convention 'mixed'); "
              "all three conventions are accepted.")
    tests = {"test_register_gradcam_hooks": {"outcome": "passed", "points": 2.0, "max_points": 2.0, "feedback": remark}}
    page = reports.feedback_html("eve", "TP2", {"tests": tests}, None)
    assert "Words used above" in page and "<dt><code>mixed</code></dt>" in page
    assert "<dt><code>pre_relu</code></dt>" not in page  # only the words used
    plain = reports.feedback_html("eve", "TP2", results(test_a=(1.0, 1.0)), None)
    assert "Words used above" not in plain


def heatmap_npz(path, **case):
    rng = np.random.default_rng(0)
    np.savez(path, image=rng.normal(size=(3, 224, 224)).astype("float32"),
             reference=rng.random((224, 224)).astype("float32"), student=rng.random((224, 224)).astype("float32"),
             **{key: np.array(value) for key, value in case.items()})
    return path


def test_heatmap_caption_names_class_layer_image_and_random_weights(tmp_path):
    names = [f"class {i}" for i in range(1000)]
    names[162] = "beagle"
    path = heatmap_npz(tmp_path / "heatmap.npz", arch="densenet121", layer="features",
                       image_name="2637374064_fab14ec0b8.jpg", class_idx=162, weights="random")
    case = reports.heatmap_case(path, names)
    assert case == reports.HeatmapCase("densenet121", "features", "2637374064_fab14ec0b8.jpg", 162, "beagle", "random")
    page = reports.feedback_html("eve", "TP2", results(test_a=(1.0, 1.0)), b"png", heatmap_case=case)
    assert ("class 162 (beagle) at the layer <code>features</code> of densenet121, on the image "
            "<code>2637374064_fab14ec0b8.jpg</code>") in page
    assert "seeded random weights" in page
    real = reports.feedback_html("eve", "TP2", results(test_a=(1.0, 1.0)), b"png",
                                 heatmap_case=reports.HeatmapCase("densenet121", "features", "x.jpg", 1, "b", "imagenet"))
    assert "seeded random weights" not in real
    # an artifact from an older judge, without the case: no caption details, no error
    assert reports.heatmap_case(heatmap_npz(tmp_path / "old.npz"), names) is None


def test_feedback_page_without_heatmap_says_so():
    page = reports.feedback_html("eve", "TP2", results(test_a=(1.0, 1.0)), None)
    assert "No heatmap" in page and "data:image/png" not in page


def test_histogram_is_a_png(tmp_path):
    path = tmp_path / "hist.png"
    reports.write_histogram(path, {"a": results(t=(1.0, 2.0)), "b": results(t=(2.0, 2.0))}, "TP2")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    reports.write_atomically(target, "one")
    reports.write_atomically(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_text_table_aligns_columns():
    table = reports.text_table(["a", "bb"], [["xxx", "y"], ["z", ""]])
    assert table.splitlines() == ["a    bb", "---  --", "xxx  y", "z"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_in_a_log_writes_one_line_per_step():
    stream = io.StringIO()
    with ProgressBar(2, "grading", stream=stream, width=4) as bar:
        bar.advance("alice: 3/3")
        bar.message("bob: failed")
        bar.advance("bob")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("grading [##..] 1/2  50%") and lines[0].endswith("alice: 3/3")
    assert lines[1] == "bob: failed"
    assert lines[2].startswith("grading [####] 2/2 100%")


def test_progress_bar_on_a_terminal_redraws_in_place():
    stream = FakeTerminal()
    with ProgressBar(3, "grading", stream=stream, width=3) as bar:
        bar.advance()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[#..] 1/3" in text.split("\r")[-1]
