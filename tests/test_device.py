"""The GPU code paths, exercised on any machine with a stand-in for tf.config."""

from types import SimpleNamespace

import pytest

from resclassify.errors import DeviceError
from resclassify.backends.tensorflow import configure_device


class FakeConfig:
    def __init__(self, gpus, initialised=False):
        self.gpus = gpus
        self.initialised = initialised
        self.calls = []
        self.experimental = SimpleNamespace(set_memory_growth=self._record("set_memory_growth"))
        self.threading = SimpleNamespace(
            set_intra_op_parallelism_threads=self._record("intra_op"),
            set_inter_op_parallelism_threads=self._record("inter_op"),
        )
        self.set_visible_devices = self._record("set_visible_devices")

    def _record(self, name):
        def call(*args):
            if self.initialised:
                raise RuntimeError("cannot be modified after initialization")
            self.calls.append((name, *args))
        return call

    def list_physical_devices(self, kind):
        assert kind == "GPU"
        return list(self.gpus)


def fake_tf(gpus, initialised=False):
    return SimpleNamespace(config=FakeConfig(gpus, initialised))


def test_auto_uses_every_gpu_with_memory_growth():
    tf = fake_tf(["gpu:0", "gpu:1"])
    assert configure_device(tf, "auto") == "gpu"
    assert tf.config.calls == [("set_memory_growth", "gpu:0", True), ("set_memory_growth", "gpu:1", True)]


def test_cpu_hides_the_gpus():
    tf = fake_tf(["gpu:0"])
    assert configure_device(tf, "cpu") == "cpu"
    assert tf.config.calls == [("set_visible_devices", [], "GPU")]


def test_gpu_without_one_is_an_error():
    with pytest.raises(DeviceError, match="TensorFlow sees no GPU"):
        configure_device(fake_tf([]), "gpu")


def test_threads_bound_tensorflow():
    tf = fake_tf([])
    assert configure_device(tf, "auto", threads=3) == "cpu"
    assert tf.config.calls == [("intra_op", 3), ("inter_op", 2)]


def test_settings_made_earlier_in_the_process_stand():
    assert configure_device(fake_tf(["gpu:0"], initialised=True), "gpu") == "gpu"
