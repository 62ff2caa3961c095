"""machine.py: one answer per machine fact (an NVIDIA GPU, versions), and the runners behind one interface."""

import importlib.metadata
import os

import pytest

from resclassify import machine
from resclassify.errors import first_line
from resclassify.labels import imagenet_classes
from resclassify.runners import Runner
from resclassify.runners.keras import KerasRunner
from resclassify.runners.onnx import OnnxRunner


@pytest.fixture
def device_folder(tmp_path, monkeypatch):
    """A stand-in /dev (and an empty GPU listing): its nvidiaN entries link to /dev/null, a character device."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(machine, "GPU_LIST_FOLDER", str(tmp_path / "no-gpus-listed"))
    folder = tmp_path / "dev"
    folder.mkdir()
    monkeypatch.setattr(machine, "DEVICE_FOLDER", str(folder))
    return folder


def test_any_gpu_device_file_counts_not_only_the_first(device_folder):
    """A container given only the host's GPU 3 sees /dev/nvidia3 and no /dev/nvidia0."""
    for name in ("nvidiactl", "nvidia-uvm", "nvidia3"):
        os.symlink(os.devnull, device_folder / name)
    assert machine.nvidia_gpu_present() is True


def test_the_driver_files_of_a_machine_without_a_gpu_do_not_count(device_folder):
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        os.symlink(os.devnull, device_folder / name)
    (device_folder / "nvidia0").write_text("a left-over file, not a device")
    assert machine.nvidia_gpu_present() is False


def test_a_version_is_the_first_installed_distributions():
    assert machine.version("no-such-distribution-here", "numpy") == importlib.metadata.version("numpy")
    assert machine.version("no-such-distribution-here") is None


def test_first_line_is_the_line_a_user_sees():
    assert first_line(ValueError("cannot open\n  Traceback...\n")) == "cannot open"
    assert first_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("runner", [
    KerasRunner(None, "custom", "/models/flowers.keras", "cpu", 192, imagenet_classes(), "tf"),
    OnnxRunner("custom", "/models/flowers.keras", 192, imagenet_classes(), "tf", "/cache/flowers.onnx"),
], ids=["keras", "onnx"])
def test_both_runners_answer_the_one_interface_alike(runner):
    assert isinstance(runner, Runner)
    assert runner.name == "flowers.keras"
    preprocessing = runner.preprocessing()
    assert (preprocessing.size, preprocessing.mode) == (192, "tf")
    assert runner.preprocessing(mode="caffe").mode == "caffe"
    assert runner.recipe is None
    runner.close()

