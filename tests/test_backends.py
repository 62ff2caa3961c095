"""Backends: uint8 batches normalized inside the network function, backend choice, out-of-memory retries."""

import json
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import SAMPLE_IMAGES
from resclassify import backends
from resclassify.config import NORMALIZE_MODES, resolve_preprocessing
from resclassify.errors import BackendError, ChoiceError, DeviceError
from resclassify.images import load_image


@pytest.fixture(scope="module")
def samples():
    preprocessing = resolve_preprocessing()
    return np.stack([load_image(p, preprocessing) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))])


@pytest.fixture(scope="module")
def reference(weights_file):
    """Keras's own ResNet50 with the same weights, nothing folded: what preprocess_input + model gives."""
    import keras

    network = keras.applications.ResNet50(weights=None)
    network.load_weights(str(weights_file))
    return network


def keras_preprocess(pixels, mode):
    from keras.applications import imagenet_utils

    x = pixels.astype(np.float32)
    return x if mode == "none" else imagenet_utils.preprocess_input(x, mode=mode)


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_uint8_batches_normalized_on_the_device_equal_preprocess_input_then_the_model(model, reference, samples,
                                                                                    mode):
    assert samples.dtype == np.uint8
    expected = reference(keras_preprocess(samples, mode), training=False).numpy()
    got = model.predict(samples, normalization=mode)
    assert got.dtype == np.float32 and got.shape == (len(samples), 1000)
    # Folded batch norms move probabilities by float rounding (most with "none": raw 0..255 inputs).
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (np.argsort(-got, axis=1)[:, :5] == np.argsort(-expected, axis=1)[:, :5]).all()


@pytest.mark.slow  # imports Keras
@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_the_normalization_arithmetic_is_keras_preprocess_input(samples, mode):
    np.testing.assert_allclose(backends.normalize(samples.astype(np.float32), mode), keras_preprocess(samples, mode),
                               rtol=1e-6, atol=1e-5)


def test_a_traced_padded_batch_gives_what_the_eager_one_gives(model, samples):
    eager = model.predict(samples[:2], normalization="tf")
    traced = model.predict(samples, pad_to=8, normalization="tf")
    np.testing.assert_allclose(traced[:2], eager, rtol=1e-4, atol=1e-6)
    assert traced.shape == (len(samples), 1000)


# --- which backend runs ------------------------------------------------------------------------

def test_the_flag_wins_over_the_variable_which_wins_over_the_default(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert backends.resolve() == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backends.resolve() == "jax"
    assert backends.resolve("tensorflow") == "tensorflow"


def test_without_tensorflow_the_installed_backend_is_the_default(monkeypatch):
    from resclassify import runners
    from resclassify.runners import onnx

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(backends, "installed", lambda name: name == "jax")
    monkeypatch.setattr(onnx, "installed", lambda: False)
    assert backends.resolve() == "jax"
    assert runners.default_choice() == ("jax", "KERAS_BACKEND is not set; tensorflow is not installed")


def test_a_backend_that_is_not_installed_says_what_to_install(monkeypatch, cli_run, weights_file):
    monkeypatch.setattr(backends, "installed", lambda name: name == "tensorflow")
    with pytest.raises(BackendError, match=r"^--backend jax: JAX is not installed; pip install 'resclassify\[jax\]'"):
        backends.resolve("jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    result = cli_run("predict", "--weights", weights_file, SAMPLE_IMAGES / "cat.jpg")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == ("resclassify: error: KERAS_BACKEND=jax: JAX is not installed; pip install "
                             "'resclassify[jax]' (see the README for JAX's CUDA build)\n")


def test_a_backend_resclassify_does_not_run_on(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(BackendError, match="^KERAS_BACKEND=torch: resclassify runs on tensorflow or jax$"):
        backends.resolve()
    with pytest.raises(ChoiceError, match="^unknown backend 'torch'; choose from tensorflow, jax$"):
        backends.resolve("torch")


def test_a_second_backend_in_one_process_is_a_one_line_error(cli_run, model, weights_file):
    # This process runs Keras on TensorFlow (the model fixture); Keras cannot switch.
    result = cli_run("predict", "--backend", "jax", "--weights", weights_file, SAMPLE_IMAGES / "cat.jpg")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == ("resclassify: error: Keras already runs on tensorflow in this process and cannot "
                             "switch to jax; use another process (resclassify --backend jax ...)\n")


@pytest.mark.parametrize("options, message", [
    ({"arch": "resnet18"}, "unknown architecture 'resnet18'; choose from resnet50, resnet101, resnet152, "
                           "resnet50v2, resnet101v2, resnet152v2"),
    ({"precision": "float8"}, "unknown precision 'float8'; choose from float32, bfloat16, float16"),
    ({"backend": "numpy"}, "unknown backend 'numpy'; choose from tensorflow, jax, onnxruntime"),
    ({"device": "tpu"}, "unknown device 'tpu'; choose from auto, cpu, gpu"),
])
def test_an_unknown_choice_passed_to_the_library_raises_one_kind_of_error(weights_file, options, message):
    import resclassify

    with pytest.raises(ChoiceError) as raised:
        resclassify.load_model(str(weights_file), **{"device": "cpu", **options})
    assert str(raised.value) == message
    assert isinstance(raised.value, resclassify.ResclassifyError) and isinstance(raised.value, ValueError)


def test_help_info_and_errors_before_the_network_import_no_backend(tmp_path):
    code = (
        "import sys\n"
        "from resclassify.cli import cli\n"
        "for args in (['--help'], ['predict', '--help'], ['info'], ['info', '--json'],\n"
        f"             ['predict', '--backend', 'jax', '--weights', {str(tmp_path / 'none.h5')!r}, 'x.jpg']):\n"
        "    try:\n"
        "        cli(args, prog_name='resclassify')\n"
        "    except SystemExit as exit:\n"
        "        print(args[0], exit.code, file=sys.stderr)\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'onnxruntime') if m in sys.modules)\n"
        "print('imported:', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resclassify  " in result.stdout and '"backends": {' in result.stdout
    assert result.stderr.splitlines()[-1] == "imported: []"
    assert f"resclassify: error: weights {tmp_path / 'none.h5'}: no such file" in result.stderr


# --- info --------------------------------------------------------------------------------------

def test_info_lists_versions_the_default_backend_and_cached_weights(cli_run, weights_file, monkeypatch):
    import importlib.metadata

    from resclassify import __version__, machine
    from resclassify.weights import KNOWN_WEIGHTS, cache_dir

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    cache_dir().mkdir(parents=True)
    (cache_dir() / KNOWN_WEIGHTS["resnet50"].file_name).write_bytes(b"x" * 2**20)
    (cache_dir() / ".resnet152_weights_tf_dim_ordering_tf_kernels.h5.abc.part").write_bytes(b"half")
    text = cli_run("info")
    assert text.exit_code == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["resclassify", __version__]
    assert lines[3].split() == ["tensorflow", importlib.metadata.version("tensorflow")]
    assert lines[4].split() == ["jax", importlib.metadata.version("jax"), "(jaxlib",
                                importlib.metadata.version("jaxlib") + ")"]
    # On a CPU with ONNX Runtime installed (the test extra installs it), a run gets ONNX Runtime.
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)
    assert "backend         onnxruntime (KERAS_BACKEND is not set; ONNX Runtime is installed and there is no " \
           "NVIDIA GPU)" in cli_run("info").stdout.splitlines()
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    lines = cli_run("info").stdout.splitlines()
    assert "backend         tensorflow (KERAS_BACKEND is not set; an NVIDIA GPU is present (ONNX Runtime runs on " \
           "the CPU))" in lines
    assert f"cache folder    {cache_dir()}" in lines
    assert lines[-1] == f"cached weights  {KNOWN_WEIGHTS['resnet50'].file_name} (resnet50, 1.0 MiB)"
    assert not any(line.startswith("devices") for line in lines)

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    info = json.loads(cli_run("info", "--json").stdout)
    assert info["default_backend"] == {"name": "jax", "why": "KERAS_BACKEND=jax"}
    assert info["backends"]["jax"]["installed"] is True and "devices" not in info["backends"]["jax"]
    assert info["keras"] == importlib.metadata.version("keras")
    assert info["cached_weights"] == [{"file": KNOWN_WEIGHTS["resnet50"].file_name, "model": "resnet50",
                                       "size": 2**20, "path": str(cache_dir() / KNOWN_WEIGHTS["resnet50"].file_name)}]


def test_info_devices_come_from_each_backend(cli_run, monkeypatch):
    seen = []

    def list_devices(name):
        seen.append(name)
        return {"tensorflow": ["cpu:0", "gpu:0 (NVIDIA H200)"], "jax": {"error": "RuntimeError: no"}}[name]

    monkeypatch.setattr(backends, "list_devices", list_devices)
    result = cli_run("info", "--devices")
    assert seen == ["tensorflow", "jax"]
    lines = result.stdout.splitlines()
    at = lines.index("devices         tensorflow: cpu:0, gpu:0 (NVIDIA H200)")
    assert lines[at + 1] == "                jax: error: RuntimeError: no"


@pytest.mark.jax
@pytest.mark.slow  # a TensorFlow and a JAX child process
def test_each_installed_backend_lists_its_cpu(tmp_path):
    # A child process per backend: neither framework is imported here.
    assert backends.list_devices("tensorflow")[0] == "cpu:0"
    assert "cpu:0" in backends.list_devices("jax")


# --- the GPU paths, with stand-ins ---------------------------------------------------------------

def tensorflow_out_of_memory():
    import tensorflow as tf

    return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,256,56,56]")


def jax_out_of_memory():
    import jax

    return jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 3.06GiB.")


@pytest.mark.slow  # imports the framework to make its error
@pytest.mark.parametrize("backend, out_of_memory", [("tensorflow", tensorflow_out_of_memory),
                                                    pytest.param("jax", jax_out_of_memory, marks=pytest.mark.jax)])
def test_out_of_memory_halves_the_batch_and_says_so(monkeypatch, backend, out_of_memory):
    from resclassify.runners import keras as keras_runner

    runtime = backends.module(backend)
    error = out_of_memory()
    assert runtime.is_out_of_memory(error) and not runtime.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED"))
    shapes = []

    def compile_network(keras_model, body):
        def run(batch):
            shapes.append(len(batch))
            if len(batch) > 6:
                raise error
            # Each image's "probabilities": its first pixel, so the order of rows shows.
            return np.asarray(batch, dtype=np.float32)[:, 0, 0, :]
        return run

    stand_in = SimpleNamespace(compile_network=compile_network, stage=lambda batch: batch,
                               is_out_of_memory=runtime.is_out_of_memory)
    monkeypatch.setattr(keras_runner, "_runtime", lambda name: stand_in)
    notices = []
    classifier = keras_runner.KerasRunner(None, "resnet50", "w.h5", "gpu", 4, None, backend=backend,
                                          notice=notices.append)
    batch = np.arange(20, dtype=np.uint8).repeat(48).reshape(20, 4, 4, 3)
    got = classifier.predict(classifier.stage(batch[:13], pad_to=16), pad_to=16)
    np.testing.assert_array_equal(got, batch[:13, 0, 0, :].astype(np.float32))
    assert shapes == [16, 8, 4, 4, 4, 4]  # 16 and 8 ran out of memory; 13 images in fours, the last padded
    assert notices == ["out of gpu memory at batch size 16; retrying at 8 (pass --batch-size 8)",
                       "out of gpu memory at batch size 8; retrying at 4 (pass --batch-size 4)"]
    # The smaller size stays: the next batch goes straight to it, without a word.
    del shapes[:]
    np.testing.assert_array_equal(classifier.predict(batch[13:], pad_to=16), batch[13:, 0, 0, :].astype(np.float32))
    assert shapes == [4, 4] and len(notices) == 2


@pytest.mark.slow  # imports TensorFlow to make its error
def test_out_of_memory_at_one_image_is_an_error(monkeypatch):
    from resclassify.runners import keras as keras_runner

    def compile_network(keras_model, body):
        def run(batch):
            raise tensorflow_out_of_memory()
        return run

    runtime = SimpleNamespace(compile_network=compile_network, stage=lambda b: b,
                              is_out_of_memory=backends.module("tensorflow").is_out_of_memory)
    monkeypatch.setattr(keras_runner, "_runtime", lambda name: runtime)
    classifier = keras_runner.KerasRunner(None, "resnet50", "w.h5", "gpu", 4, None)
    with pytest.raises(DeviceError, match="^out of gpu memory even at batch size 1$"):
        classifier.predict(np.zeros((2, 4, 4, 3), np.uint8))


def test_the_next_batch_is_staged_while_the_network_works_on_this_one(tmp_path):
    from conftest import save_image
    from resclassify.pipeline import score

    class Overlapping:
        """predict() of a batch waits until the batch after it has been staged (or 10 s pass)."""

        def __init__(self):
            self.staged = []
            self.next_staged = threading.Event()
            self.waited = []

        def stage(self, batch, pad_to=None):
            self.staged.append(len(batch))
            if len(self.staged) == 2:
                self.next_staged.set()
            return batch

        def predict(self, batch, pad_to=None, normalization=None):
            if not self.waited:
                self.waited.append(self.next_staged.wait(10))
            return np.zeros((len(batch), 3), np.float32)

    paths = [str(save_image(tmp_path / f"{i}.png", size=(40, 30), seed=i)) for i in range(6)]
    network = Overlapping()
    results = list(score(paths, network, resolve_preprocessing(), batch_size=3, workers=2))
    assert len(results) == 6 and network.staged == [3, 3]
    assert network.waited == [True]


@pytest.mark.jax
def test_jax_takes_gpu_memory_as_needed_and_never_touches_a_gpu_for_device_cpu():
    code = (
        "import os\n"
        "from resclassify.backends import jax as backend\n"
        "print(backend.configure('cpu', threads=1))\n"
        "print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'], os.environ['JAX_PLATFORMS'], os.environ['XLA_FLAGS'])\n"
        "import jax\n"
        "print(jax.config.jax_default_device.platform, jax.devices()[0].platform)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS",
                                                              "XLA_FLAGS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["cpu", "false cpu --xla_cpu_multi_thread_eigen=false", "cpu cpu"]


@pytest.mark.jax
def test_jax_gpu_without_one_is_an_error():
    code = (
        "from resclassify.backends import jax as backend\n"
        "backend.configure('gpu')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "resclassify.errors.DeviceError: --device gpu: JAX sees no GPU on this machine (its CPU build, or no CUDA "
        "device; the README says how to install JAX for CUDA; or use --device cpu or auto)")


def test_float16_on_a_cpu_warns_once(monkeypatch, cli_run):
    import resclassify
    from resclassify.labels import imagenet_classes
    from resclassify.runners.keras import KerasRunner

    class StandIn(KerasRunner):
        def predict(self, batch, pad_to=None, normalization=None):
            return np.full((len(batch), 1000), 1e-3, np.float32)

    loaded = StandIn(None, "resnet50", "w.h5", "cpu", 224, imagenet_classes(), precision="float16")
    monkeypatch.setattr(resclassify, "load_model", lambda *args, **kwargs: loaded)
    images = [SAMPLE_IMAGES / "cat.jpg", SAMPLE_IMAGES / "coffee.jpg"]
    result = cli_run("predict", "--precision", "float16", "--json", *images)
    assert result.exit_code == 0
    assert result.stderr == ("resclassify: warning: --precision float16 on a CPU is slow (CPUs emulate most float16 "
                             "arithmetic); bfloat16 or float32 are faster there\n")
    loaded.device = "gpu"
    assert cli_run("predict", "--precision", "float16", "--json", *images).stderr == ""
