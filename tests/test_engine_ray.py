"""--engine ray: the same records and report as the local engine, from a Ray on this machine (num_cpus=2).

One Ray for the whole module (starting one takes seconds); each run still starts its own actor,
which loads the model once.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import resclassify
from conftest import BACKEND_TOLERANCE, REPO, SAMPLE_IMAGES, assert_records_match, jsonl, save_image

pytest.importorskip("ray", reason="the ray extra: pip install 'resclassify[ray]'")
pytestmark = pytest.mark.ray

SAMPLES = sorted(str(p) for p in SAMPLE_IMAGES.glob("*.jpg"))


@pytest.fixture(scope="module")
def local_ray():
    """A Ray on 127.0.0.1 with 2 CPUs, started as the engine starts one, shut down after the module."""
    import ray

    from resclassify.engines.ray import RayEngine

    engine = RayEngine(num_cpus=2)
    # As the command line's: ray.init would put its own (sys.exit) in its place.
    previous = signal.signal(signal.SIGTERM, callers_sigterm_handler)
    try:
        engine.connect()
        handlers_after_start.append(signal.getsignal(signal.SIGTERM))
        yield ray.get_runtime_context().gcs_address
        engine.close()
        assert not ray.is_initialized()
    finally:
        signal.signal(signal.SIGTERM, previous)


def callers_sigterm_handler(number, frame):
    raise KeyboardInterrupt


handlers_after_start = []


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-inputs")
    paths = [str(save_image(folder / f"photo{n}.jpg", size=(90 + 7 * n, 70), seed=40 + n, quality=90))
             for n in range(5)]
    (folder / "broken.jpg").write_bytes(b"not an image")
    return SAMPLES + paths + [str(folder / "broken.jpg"), str(folder / "missing.jpg")]


def test_a_ray_started_here_listens_on_loopback_only(local_ray):
    import ray

    assert local_ray.startswith("127.0.0.1:")
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
    assert ray.cluster_resources()["CPU"] == 2


def test_starting_ray_keeps_the_callers_sigterm_handler(local_ray):
    # The command line's handler stops a run as Ctrl-C does, closing its files whole (exit 143).
    assert handlers_after_start == [callers_sigterm_handler]


def test_ray_predict_on_a_cluster_address_gives_the_local_records(local_ray, weights_file, model, inputs, tmp_path):
    """Another process (the CLI) connects to the cluster by address, as on a real cluster; it leaves it running."""
    from resclassify.sources.inputs import expand_inputs

    expected = list(resclassify.classify(expand_inputs(inputs), model, top_k=5))
    out = tmp_path / "ray.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-m", "resclassify", "predict", "--engine", "ray", "--ray-address", local_ray,
         "--weights", str(weights_file), "--batch-size", "4", "--output", str(out), *inputs],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 3, result.stderr  # the broken and the missing file
    assert result.stdout == ""
    # Only our own lines: no Ray start-up, progress or actor noise.
    assert result.stderr.splitlines() == [
        f"resclassify: error: {inputs[-2]}: cannot identify image file",
        f"resclassify: error: {inputs[-1]}: no such file or directory",
        f"resclassify: warning: 2 of {len(inputs)} inputs could not be classified",
    ]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == inputs  # input order
    assert_records_match(records, expected)

    import ray

    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2  # the cluster is still up


def test_ray_eval_gives_the_local_report(local_ray, cli_run, weights_file, seven, tmp_path):
    local = cli_run("eval", seven, "--json", "--weights", weights_file, "--predictions-out", tmp_path / "local.jsonl")
    on_ray = cli_run("eval", seven, "--json", "--weights", weights_file, "--engine", "ray", "--batch-size", "4",
                     "--predictions-out", tmp_path / "ray.jsonl")
    assert (local.exit_code, on_ray.exit_code) == (3, 3)
    assert on_ray.stderr == local.stderr
    local_report, ray_report = json.loads(local.stdout), json.loads(on_ray.stdout)
    for key in ("accuracy", "per_class", "worst_classes", "confusions", "failed", "images", "preprocessing"):
        assert ray_report[key] == local_report[key], key
    assert ray_report["model"]["device"] == "ray: 1 CPU actor"
    local_records = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    ray_records = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert_records_match(ray_records, local_records)


def test_gpu_actors_on_a_cluster_without_gpus_are_refused(local_ray, cli_run, weights_file):
    result = cli_run("predict", "--engine", "ray", "--device", "gpu", "--weights", weights_file, SAMPLES[0])
    assert result.exit_code == 1
    assert result.stderr == "resclassify: error: --device gpu: the Ray cluster has no GPU (use --device cpu or auto)\n"


def test_the_network_stage_in_a_users_own_ray_pipeline(local_ray, weights_file, model):
    import ray

    from resclassify.engines.ray import Classify, decode_batch

    preprocessing = model.preprocessing()
    dataset = ray.data.from_items([{"path": path} for path in SAMPLES])
    dataset = dataset.map_batches(decode_batch, fn_kwargs={"preprocessing": preprocessing}, batch_size=2)
    dataset = dataset.map_batches(Classify, fn_constructor_kwargs={"weights": str(weights_file), "device": "cpu",
                                                                   "top_k": 3},
                                  compute=ray.data.ActorPoolStrategy(size=1), batch_size=4, num_cpus=0.5)
    rows = sorted(dataset.take_all(), key=lambda row: row["path"])
    expected = list(resclassify.classify(SAMPLES, model, top_k=3))
    assert [row["path"] for row in rows] == SAMPLES
    for row, record in zip(rows, expected):
        assert list(row["top_k_indices"]) == [p["index"] for p in record["predictions"]]
        assert list(row["top_k_labels"]) == [p["label"] for p in record["predictions"]]
        np.testing.assert_allclose(row["top_k_probabilities"], [p["probability"] for p in record["predictions"]],
                                   rtol=1e-4, atol=1e-6)
        assert row["probabilities"].shape == (1000,) and row["error"] == ""


def test_without_ray_installed_the_engine_says_what_to_install(cli_run, weights_file, monkeypatch):
    import resclassify.engines.ray as ray_engine

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load when the engine is missing")

    monkeypatch.setattr(ray_engine, "ray_installed", lambda: False)
    monkeypatch.setattr(resclassify, "load_model", no_model)
    result = cli_run("predict", "--engine", "ray", "--weights", weights_file, SAMPLES[0])
    assert result.exit_code == 1
    assert result.stderr == "resclassify: error: --engine ray needs Ray: pip install 'resclassify[ray]'\n"
    result = cli_run("predict", "--ray-address", "127.0.0.1:1", "--weights", weights_file, SAMPLES[0])
    assert result.exit_code == 2 and "--ray-address goes with --engine ray" in result.stderr


def test_ray_is_imported_only_for_the_ray_engine(weights_file):
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from resclassify.cli import cli\n"
        "CliRunner().invoke(cli, ['predict', '--help'])\n"
        "CliRunner().invoke(cli, ['eval', '--help'])\n"
        f"result = CliRunner().invoke(cli, ['predict', '--json', '--weights', {str(weights_file)!r}, {SAMPLES[0]!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(name for name in sys.modules if name == 'ray' or name.startswith('ray.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


# --- without a cluster: the stages and the driver's pieces called directly --------------------

class StandInNetwork:
    """What load_model returns, without a network: records the backend and device it was asked for."""

    def __init__(self, backend, device):
        from resclassify.labels import imagenet_classes

        self.backend, self.device, self.name, self.classes = backend, device, "resnet50", imagenet_classes()


def test_actors_choose_the_runtime_for_their_own_device(weights_file, monkeypatch):
    """The driver on a CPU node with the onnx extra gets ONNX Runtime; an actor on a GPU node must not (ONNX
    Runtime runs on the CPU only): without --backend, each actor chooses for its own device."""
    from resclassify import machine, resolve_preprocessing
    from resclassify.engines.ray import Classify, actor_recipe
    from resclassify.runners import keras as keras_runner
    from resclassify.runners import onnx as ort

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(ort, "installed", lambda: True)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)  # stand-in device check: a CPU node
    monkeypatch.setattr(ort, "load_classifier", lambda *args, **kwargs: StandInNetwork("onnxruntime", "cpu"))
    monkeypatch.setattr(keras_runner, "load_classifier",
                        lambda path, arch, device, *, backend, **kwargs: StandInNetwork(backend, device))

    driver = resclassify.load_model(str(weights_file), device="cpu")
    assert driver.backend == "onnxruntime"
    preprocessing = resolve_preprocessing()
    on_gpu = Classify(actor_recipe(driver.recipe, "gpu", None), preprocessing=preprocessing, batch_size=4)
    assert (on_gpu.classifier.backend, on_gpu.classifier.device) == ("tensorflow", "gpu")
    on_cpu = Classify(actor_recipe(driver.recipe, "cpu", None), preprocessing=preprocessing, batch_size=4)
    assert on_cpu.classifier.backend == "onnxruntime"
    # A backend the user named is every actor's.
    named = resclassify.load_model(str(weights_file), device="cpu", backend="jax")
    on_gpu = Classify(actor_recipe(named.recipe, "gpu", None), preprocessing=preprocessing, batch_size=4)
    assert (on_gpu.classifier.backend, on_gpu.classifier.device) == ("jax", "gpu")


def result_batch(paths, backend="tensorflow"):
    rows = len(paths)
    return {"path": np.array(paths, dtype=object), "error": np.array([""] * rows, dtype=object),
            "probabilities": np.eye(rows, 1000, dtype=np.float32), "backend": np.array([backend] * rows, dtype=object)}


def test_results_are_matched_to_their_inputs_by_path():
    from resclassify.engines.ray import RayEngineError, matched_results
    from resclassify.labels import imagenet_classes
    from resclassify.pipeline import prediction_record

    items = ["/data/a.jpg", "/data/b.jpg", "/data/c.jpg"]
    rows = [{"path": path, "error": ""} for path in items]
    scored = list(matched_results(items, rows, [result_batch(items[:2]), result_batch(items[2:])]))
    assert [s.path for s in scored] == items
    assert [int(s.probabilities.argmax()) for s in scored] == [0, 1, 0]
    # The record names the backend the actor ran, not the driver's copy's.
    record = prediction_record(scored[0], imagenet_classes(), 1, model_name="resnet50", backend="onnxruntime")
    assert record["backend"] == "tensorflow"

    shifted = matched_results(items, rows, [result_batch(items[1:])])
    with pytest.raises(RayEngineError, match="the Ray run returned the result of /data/b.jpg where the one of "
                                             "/data/a.jpg was due \\(input 1\\)"):
        next(shifted)
    with pytest.raises(RayEngineError, match="the Ray run returned 2 results for 3 inputs"):
        list(matched_results(items, rows, [result_batch(items[:2])]))
    with pytest.raises(RayEngineError, match="more results than its 3 inputs"):
        list(matched_results(items, rows, [result_batch(items), result_batch(items[:1])]))


# --- remote inputs: the driver lists, the decoding tasks read the bytes ---------------------------

def test_ray_predict_over_a_bucket_gives_the_records_of_the_same_images_on_disk(local_ray, s3, cli_run, model,
                                                                               weights_file, tmp_path):
    """The module's Ray started before this test pointed the environment at the S3 server, so its workers have
    neither the endpoint nor credentials unless the driver sends them (as to a cluster joined by address)."""
    from resclassify.sources.inputs import expand_inputs
    from resclassify.sources.remote import RemoteImage

    folder = tmp_path / "photos"
    for n in range(4):
        save_image(folder / f"p{n}.jpg", size=(96 + 9 * n, 80), seed=60 + n, quality=90)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, bucket, "photos/")
    prefix = f"s3://{bucket}/photos/"
    missing = prefix + "deleted.jpg"  # named on the command line, never in the bucket
    on_disk = list(resclassify.classify(expand_inputs([str(folder)]), model, top_k=5))
    [missing_record] = resclassify.classify([RemoteImage(missing, missing)], model, top_k=5)  # the local engine's

    out = tmp_path / "ray.jsonl"
    result = cli_run("predict", "--engine", "ray", "--weights", weights_file, "--batch-size", "2", "--output", out,
                     prefix, missing)
    assert result.exit_code == 3, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"resclassify: error: {missing}: {missing_record['error']}",
        "resclassify: warning: 1 of 5 inputs could not be classified",
    ]
    records = jsonl(out)
    assert [r["path"] for r in records] == [f"{prefix}p{n}.jpg" for n in range(4)] + [missing]
    assert records[-1] == missing_record
    assert_records_match([{**r, "path": d["path"]} for r, d in zip(records, on_disk)], on_disk, BACKEND_TOLERANCE)


def test_ray_classifies_tar_members_from_their_byte_ranges(local_ray, model, tmp_path, monkeypatch):
    """Members of a local tar shard as RemoteImage ranges: read in the tasks (not here), named shard/member."""
    import tarfile

    from resclassify.engines.ray import RayEngine
    from resclassify.sources import remote
    from resclassify.sources.remote import RemoteImage

    monkeypatch.chdir(tmp_path)  # a relative shard path: the records keep it; the tasks run elsewhere
    members = tmp_path / "members"
    for n in range(3):
        save_image(members / f"00000{n}.jpg", size=(88 + 11 * n, 72), seed=80 + n, quality=90)
    (members / "000003.jpg").write_bytes(b"not an image")
    Path("shards").mkdir()
    shard = "shards/val-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted(members.iterdir()):
            tar.add(path, arcname=path.name)
    with tarfile.open(shard) as tar:
        items = [RemoteImage(f"{shard}/{m.name}", shard, m.offset_data, m.offset_data + m.size) for m in tar]
    size = Path(shard).stat().st_size
    items.append(RemoteImage(f"{shard}/000004.jpg", shard, size - 100, size + 100))  # past the end: cut short

    on_disk = list(resclassify.classify([str(members / f"00000{n}.jpg") for n in range(3)], model, top_k=5))
    local = list(resclassify.classify(items, model, top_k=5))
    # From here this process reads no image bytes: the tasks must.
    monkeypatch.setattr(remote, "_read_local", lambda image: pytest.fail("the driver read a tar member"))
    with RayEngine() as engine:
        on_ray = list(resclassify.classify(items, model, top_k=5, engine=engine))

    assert [r["path"] for r in on_ray] == [f"{shard}/00000{n}.jpg" for n in range(5)]
    assert_records_match(on_ray, local, BACKEND_TOLERANCE)
    assert [r["error"] for r in on_ray[3:]] == ["cannot identify image file", "cut short: 100 of 200 bytes"]
    assert_records_match([{**r, "path": d["path"]} for r, d in zip(on_ray, on_disk)], on_disk, BACKEND_TOLERANCE)


def test_decoding_tasks_get_the_drivers_storage_variables_for_remote_inputs_only():
    from resclassify.engines.ray import storage_runtime_env
    from resclassify.sources.remote import RemoteImage

    environ = {"AWS_ENDPOINT_URL": "http://minio.internal:9000", "AWS_ACCESS_KEY_ID": "key",
               "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1", "AWS_PROFILE": "laptop",
               "GOOGLE_APPLICATION_CREDENTIALS": "/home/me/key.json", "HOME": "/home/me"}
    in_bucket = RemoteImage("s3://b/p.jpg", "s3://b/p.jpg")
    assert storage_runtime_env(["/data/a.jpg", in_bucket], environ) == {"env_vars": {
        "AWS_ENDPOINT_URL": "http://minio.internal:9000", "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"}}
    # Local files and members of a local shard need nothing; nor does a driver with no storage variables.
    assert storage_runtime_env(["/data/a.jpg", RemoteImage("s.tar/0.jpg", "s.tar", 512, 1024)], environ) is None
    assert storage_runtime_env([in_bucket], {"HOME": "/home/me"}) is None


def test_a_node_that_cannot_read_the_store_stops_the_run_with_one_line(monkeypatch):
    """Not an error record per image (every input would fail alike): the driver stops the run with the reason."""
    from resclassify import resolve_preprocessing
    from resclassify.engines.ray import RayEngineError, decode_batch, input_row, matched_results
    from resclassify.errors import StorageError
    from resclassify.sources import remote
    from resclassify.sources.remote import RemoteImage

    def no_extra(url):
        raise StorageError(f"{url}: reading s3:// URLs needs s3fs: pip install 'resclassify[s3]'")

    monkeypatch.setattr(remote, "filesystem", no_extra)
    items = [SAMPLES[0], RemoteImage("s3://b/p.jpg", "s3://b/p.jpg"), RemoteImage("s3://b/q.jpg", "s3://b/q.jpg")]
    rows = [input_row(item) for item in items]
    batch = {column: np.array([row[column] for row in rows], dtype=object) for column in rows[0]}
    decoded = decode_batch(batch, resolve_preprocessing())
    failure = decoded["failure"][0]
    assert list(decoded["failure"]) == [failure] * 3 and list(decoded["error"][1:]) == [failure] * 2
    results = matched_results(items, rows, [{**decoded, **result_batch([row["path"] for row in rows])}])
    with pytest.raises(RayEngineError, match=r"^the Ray run failed: s3://b/p\.jpg: reading s3:// URLs needs s3fs: "
                                             r"pip install 'resclassify\[s3\]' \(in a decoding task on the Ray node at "):
        list(results)
