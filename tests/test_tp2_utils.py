"""The shipped helper module: images, preprocessing, class names and the weights policy."""

from __future__ import annotations

import subprocess
import sys
import urllib.error

import pytest
import torch
from PIL import Image
from torchvision import transforms


# ---------------------------------------------------------------------------------- images
def test_the_grayscale_jpeg_loads_as_rgb(course, tp2_utils):
    path = course.images_dir / "481635090_85a1c668ed.jpg"
    with Image.open(path) as raw:
        assert raw.mode == "L"
        gray = transforms.functional.pil_to_tensor(raw.convert("L"))[0].float()
    image = tp2_utils.load_image(path)
    assert image.mode == "RGB"
    channels = transforms.functional.pil_to_tensor(image).float()
    # The three channels are the one gray channel, repeated.
    assert torch.equal(channels[0], gray) and torch.equal(channels[1], gray) and torch.equal(channels[2], gray)
    assert tp2_utils.preprocess(image).shape == (3, 224, 224)


def test_the_rgba_png_loads_as_rgb(course, tp2_utils):
    path = course.images_dir / "9928031928.png"
    with Image.open(path) as raw:
        assert raw.mode == "RGBA"
        rgb_part = transforms.functional.pil_to_tensor(raw)[:3]
    image = tp2_utils.load_image(path)
    assert image.mode == "RGB" and image.size == (224, 224)
    # The PNG is fully opaque, so converting keeps its colours exactly.
    assert torch.equal(transforms.functional.pil_to_tensor(image), rgb_part)


def test_transparent_pixels_become_white_not_black(tmp_path, tp2_utils):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(path)
    assert tp2_utils.load_image(path).getpixel((3, 3)) == (255, 255, 255)


def test_a_truncated_jpeg_is_an_error_naming_the_file(course, tp2_utils, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((course.images_dir / "2637374064_fab14ec0b8.jpg").read_bytes()[:3000])
    with pytest.raises(tp2_utils.ImageLoadError, match="broken.jpg"):
        tp2_utils.load_image(broken)


def test_a_non_image_file_is_an_error_naming_the_file(tmp_path, tp2_utils):
    fake = tmp_path / "notes.png"
    fake.write_text("these are not pixels")
    with pytest.raises(tp2_utils.ImageLoadError, match="notes.png"):
        tp2_utils.load_image(fake)
    with pytest.raises(tp2_utils.ImageLoadError, match="absent.jpg"):
        tp2_utils.load_image(tmp_path / "absent.jpg")


def test_the_image_list_is_sorted_and_found_from_a_subfolder(course, tp2_utils, monkeypatch):
    monkeypatch.delenv("TP2_IMAGES_DIR", raising=False)
    monkeypatch.chdir(course.source_dir)
    paths = tp2_utils.list_images()
    assert [p.name for p in paths] == sorted(p.name for p in paths)
    assert len(paths) == 21 and paths[0].parent == course.images_dir


def test_a_missing_images_folder_says_what_to_do(tmp_path, tp2_utils, monkeypatch):
    monkeypatch.delenv("TP2_IMAGES_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="TP2_images.zip") as error:
        tp2_utils.find_images_dir(tmp_path)
    message = str(error.value)
    assert f"{tmp_path / 'TP2_images'}/ holds the .jpg and .png files" in message   # where to unzip it
    assert "fetches the course files" in message and "TP2_IMAGES_DIR" in message
    assert isinstance(error.value, tp2_utils.SetupError)


# ---------------------------------------------------------------------------------- preprocessing
def test_preprocessing_round_trip(course, tp2_utils):
    image = tp2_utils.load_image(course.images_dir / "2637374064_fab14ec0b8.jpg")
    normalised = tp2_utils.preprocess(image)
    assert normalised.shape == (3, 224, 224)
    # Independent truth: the same geometry without normalisation.
    pixels = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])(image)
    torch.testing.assert_close(tp2_utils.denormalize(normalised), pixels, atol=1e-6, rtol=0)
    batch = tp2_utils.denormalize(normalised.unsqueeze(0).repeat(2, 1, 1, 1))
    assert batch.shape == (2, 3, 224, 224)
    torch.testing.assert_close(batch[1], pixels, atol=1e-6, rtol=0)


def test_normalisation_uses_the_imagenet_statistics(tp2_utils):
    gray = Image.new("RGB", (300, 260), (124, 116, 104))  # about the ImageNet mean colour
    x = tp2_utils.preprocess(gray)
    expected = (torch.tensor([124, 116, 104]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    torch.testing.assert_close(x[:, 100, 100], expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------- class names
def test_class_names(tp2_utils):
    names = tp2_utils.class_names()
    assert len(names) == 1000 and len(set(names)) > 990
    assert (names[281], names[282], names[285]) == ("tabby", "tiger cat", "Egyptian cat")
    assert names[0] == "tench"


# ---------------------------------------------------------------------------------- weights policy
_FINGERPRINT = (
    "import hashlib, sys, torch; sys.path.insert(0, {folder!r}); import tp2_utils;"
    "m = tp2_utils.load_model({arch!r}, weights='random');"
    "print(hashlib.sha256(b''.join(v.numpy().tobytes() for v in m.state_dict().values())).hexdigest())"
)


@pytest.mark.parametrize("arch", ["densenet121", "resnet18"])
def test_random_weights_are_identical_across_processes(course, arch):
    code = _FINGERPRINT.format(folder=str(course.source_dir), arch=arch)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in range(2)]
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout.strip()) == 64
    # ...and the process says once, plainly, that these are random weights.
    assert runs[0].stderr.count("random weights") == 1


def test_random_weights_do_not_disturb_the_global_generator(tp2_utils):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tp2_utils.load_model("resnet18", weights="random")
    assert torch.equal(torch.rand(3), expected)


def test_the_policy_comes_from_the_environment(tp2_utils, monkeypatch):
    monkeypatch.setenv("GRADCAM_WEIGHTS", "random")
    assert tp2_utils.load_model("resnet18").weights_source == "random"
    monkeypatch.delenv("GRADCAM_WEIGHTS")
    assert tp2_utils.weights_policy() == "imagenet"


def test_a_state_dict_file_round_trips(tp2_utils, tmp_path):
    reference = tp2_utils.load_model("densenet121", weights="random")
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    # Save with the legacy key names of old torchvision checkpoints ("norm.1" for "norm1").
    legacy = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in state.items()}
    assert legacy.keys() != state.keys()
    path = tmp_path / "weights.pth"
    torch.save(legacy, path)
    loaded = tp2_utils.load_model("densenet121", weights=str(path))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert loaded.weights_source == str(path) and not loaded.training


def test_a_bad_weights_path_gives_a_clear_error(tp2_utils, tmp_path):
    with pytest.raises(tp2_utils.WeightsError, match="nowhere.pth: no such file"):
        tp2_utils.load_model("densenet121", weights=str(tmp_path / "nowhere.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(tp2_utils.WeightsError, match="garbage.pth: not a readable PyTorch state dict"):
        tp2_utils.load_model("densenet121", weights=str(garbage))
    other = tmp_path / "resnet.pth"
    torch.save(tp2_utils.load_model("resnet18", weights="random").state_dict(), other)
    with pytest.raises(tp2_utils.WeightsError, match="resnet.pth: not a densenet121 state dict"):
        tp2_utils.load_model("densenet121", weights=str(other))


def test_missing_imagenet_weights_say_how_to_get_them(tp2_utils, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(tp2_utils.WeightsError) as error:
        tp2_utils.load_model("densenet121", weights="imagenet")
    message = str(error.value)
    assert "GRADCAM_WEIGHTS" in message and "densenet121-a639ec97.pth" in message and "random" in message


def test_a_setup_error_shows_in_jupyter_as_a_few_lines(tp2_utils, monkeypatch, tmp_path):
    """IPython shows ``_render_traceback_`` instead of the traceback: the message alone, no chained cause."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("no network")))
    with pytest.raises(tp2_utils.WeightsError) as error:
        tp2_utils.load_model("resnet18", weights="imagenet")
    shown = error.value._render_traceback_()
    assert shown[0].startswith("WeightsError: the ImageNet weights of resnet18 could not be downloaded (URLError")
    assert len(shown) <= 7 and any('choose_weights(resnet18="/path/to/resnet18-f37072fd.pth")' in line for line in shown)
    assert error.value.__suppress_context__, "no 'During handling of the above exception' in plain Python"


@pytest.fixture()
def no_choice(tp2_utils, monkeypatch):
    """No weights chosen with choose_weights, and no GRADCAM_WEIGHTS, for the test."""
    monkeypatch.setattr(tp2_utils, "_chosen", {})
    monkeypatch.delenv("GRADCAM_WEIGHTS", raising=False)


def test_choose_weights_for_every_model_or_for_one(tp2_utils, no_choice, tmp_path, capsys):
    assert tp2_utils.weights_policy("resnet18") == "imagenet"
    tp2_utils.choose_weights("random")
    assert "seeded random weights" in capsys.readouterr().out
    assert tp2_utils.load_model("resnet18").weights_source == "random"
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tp2_utils.load_model("resnet18", weights="random").state_dict(), path)
    tp2_utils.choose_weights(resnet18=path)
    assert tp2_utils.weights_policy("resnet18") == str(path) and tp2_utils.weights_policy("densenet121") == "random"
    assert f"resnet18: the weights in {path}" in capsys.readouterr().out
    assert tp2_utils.load_model("resnet18").weights_source == str(path)
    with pytest.raises(ValueError, match="vgg16"):
        tp2_utils.choose_weights(vgg16="random")
    with pytest.raises(tp2_utils.WeightsError, match="nowhere.pth: no such file or folder"):
        tp2_utils.choose_weights(densenet121=tmp_path / "nowhere.pth")


def test_a_choice_in_the_notebook_wins_over_the_environment(tp2_utils, no_choice, monkeypatch):
    monkeypatch.setenv("GRADCAM_WEIGHTS", "imagenet")
    tp2_utils.choose_weights(densenet121="random")
    assert tp2_utils.weights_policy("densenet121") == "random" and tp2_utils.weights_policy("resnet18") == "imagenet"


def test_a_folder_of_weights_files_serves_each_model(tp2_utils, tmp_path):
    """GRADCAM_WEIGHTS=FOLDER (or choose_weights(FOLDER)): each model's file under torchvision's name."""
    for arch in ("densenet121", "resnet18"):
        model = tp2_utils.load_model(arch, weights="random")
        state = {k: v + 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        torch.save(state, tmp_path / tp2_utils.weights_file_name(arch))
        loaded = tp2_utils.load_model(arch, weights=str(tmp_path))
        key = next(k for k, v in state.items() if v.is_floating_point())
        assert torch.equal(loaded.state_dict()[key], state[key])
    (tmp_path / tp2_utils.weights_file_name("resnet18")).unlink()
    with pytest.raises(tp2_utils.WeightsError, match="resnet18-f37072fd.pth: no such file"):
        tp2_utils.load_model("resnet18", weights=str(tmp_path))


def test_a_file_for_another_model_says_to_give_each_model_its_own(tp2_utils, tmp_path):
    path = tmp_path / "densenet.pth"
    torch.save(tp2_utils.load_model("densenet121", weights="random").state_dict(), path)
    with pytest.raises(tp2_utils.WeightsError, match="Each model needs its own file: tp2_utils.choose_weights"):
        tp2_utils.load_model("resnet18", weights=str(path))


def test_the_random_weights_notice_says_what_they_are_useless_for(course):
    code = (f"import sys; sys.path.insert(0, {str(course.source_dir)!r}); import tp2_utils;"
            "tp2_utils.load_model('resnet18', weights='random')")
    notice = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert notice.startswith("NOTE: GRADCAM_WEIGHTS=random, so resnet18 has seeded random weights")  # IgnorePattern
    assert "Parts 2 to 4 and of the bonus" in notice


def test_an_unknown_architecture_is_refused(tp2_utils):
    with pytest.raises(ValueError, match="vgg16"):
        tp2_utils.load_model("vgg16", weights="random")


# ---------------------------------------------------------------------------------- real weights
def test_real_densenet_predicts_the_two_cats(tp2_utils, two_cats_path):
    """A fact from the course: top-3 285, 281, 282 with raw scores of about 11.897, 10.017, 9.185."""
    if not tp2_utils.imagenet_weights_file("densenet121").is_file():
        pytest.skip("the ImageNet weights of DenseNet-121 are not in torchvision's cache")
    model = tp2_utils.load_model("densenet121", weights="imagenet")
    with torch.no_grad():
        scores = model(tp2_utils.load_batch([two_cats_path]))[0]
    top = scores.topk(3)
    assert top.indices.tolist() == [285, 281, 282]
    torch.testing.assert_close(top.values, torch.tensor([11.897, 10.017, 9.185]), atol=2e-3, rtol=0)
