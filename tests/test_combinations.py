"""Where features meet: one labelled set through engine x runtime x record format x (whole, sharded and
merged, stopped by SIGTERM and resumed), each combination giving the one reference report.

Every pair of those choices that a user meets is run at least once (a pairwise plan, not the full
product, so that it stays short):

| run        | engine | runtime                      | records | how                                  |
|------------|--------|------------------------------|---------|--------------------------------------|
| reference  | local  | tensorflow                   | JSONL   | whole                                |
| shard 1/3  | local  | onnxruntime                  | CSV     | three shards, merged                 |
| shard 2/3  | ray    | tensorflow                   | JSONL   |                                      |
| shard 3/3  | local  | jax (conftest's JAX process) | JSONL   |                                      |
| stopped    | local  | tensorflow (a real process)  | CSV     | SIGTERM mid-run, then --resume ...   |
| resumed    | ray    | onnxruntime                  | CSV     | ... on another kind of node          |

The set holds one unreadable image, which --max-failures 1 accepts, so every run exits 0.

The same set then meets object storage and tar shards (test_the_set_in_a_bucket_and_in_tar_shards...):

| run          | input                              | engine | runtime     | records            |
|--------------|------------------------------------|--------|-------------|--------------------|
| shard 1/2    | s3:// prefix of class folders      | local  | onnxruntime | Parquet            |
| shard 2/2    | s3:// prefix (the saved listing)   | ray    | tensorflow  | JSONL, into bucket |
| merged       | --from-predictions: file + s3 URL  |        |             |                    |
| tar, stopped | s3:// tar shards, brace form       | local  | tensorflow  | CSV, cut mid-run   |
| tar, resumed | the same shards                    | ray    | onnxruntime | CSV, --resume      |
"""

import io
import json
import os
import tarfile
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import BACKEND_TOLERANCE, REPO, assert_records_match

pytestmark = [pytest.mark.ray, pytest.mark.jax, pytest.mark.onnx, pytest.mark.slow]

# The real command line, with the decode of one image held until the process is stopped: the run is
# then certainly mid-way when SIGTERM comes, whatever the machine's speed.
STOPPED_RUN = """
import os, sys, threading
import resclassify.decoding as decoding

real_load_image = decoding.load_image

def load_image(path, *args, **kwargs):
    if os.path.basename(path) == os.environ["STOP_AT"]:
        open(os.environ["STOP_MARKER"], "w").close()
        threading.Event().wait()
    return real_load_image(path, *args, **kwargs)

decoding.load_image = load_image
from resclassify.cli import main
sys.argv[0] = "resclassify"
main()
"""

FIGURES = ("accuracy", "per_class", "worst_classes", "confusions", "failed", "preprocessing")


@pytest.fixture(scope="module")
def ray_with_onnx_cache(exported_home):
    """A local Ray whose workers find the session's ONNX export (they inherit KERAS_HOME from this process)."""
    import ray

    from resclassify.engines.ray import RayEngine

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(exported_home[0]))
        engine = RayEngine(num_cpus=2)
        engine.connect()
    yield
    engine.close()
    assert not ray.is_initialized()


@pytest.fixture
def onnx_cache(exported_home, monkeypatch):
    """This process's runs find the session's ONNX export too."""
    monkeypatch.setenv("KERAS_HOME", str(exported_home[0]))


def combination_args(folder, *args):
    return ["eval", folder, "--device", "cpu", "--json", "--max-failures", "1", *args]


def records(path):
    from resclassify.records import read_record_file

    found = read_record_file(str(path))
    assert not found.cut_off, path
    return found.records


def assert_same_report(report, reference):
    for key in FIGURES:
        assert report[key] == reference[key], key
    for key in ("evaluated", "failed"):
        assert report["images"][key] == reference["images"][key], key
    assert report["model"]["name"] == reference["model"]["name"]


def assert_same_records(got, reference):
    """One run's records whatever runtime wrote each: equal but for the backend, probabilities within tolerance."""
    def comparable(found):
        return sorted(({k: v for k, v in r.items() if k != "backend"} for r in found), key=lambda r: r["path"])

    assert_records_match(comparable(got), comparable(reference), BACKEND_TOLERANCE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, combination_set, weights_file):
    """The whole run, here, on TensorFlow, to JSON Lines: what every combination must give."""
    from click.testing import CliRunner

    from resclassify.cli import cli

    folder, _ = combination_set
    out = tmp_path_factory.mktemp("reference") / "reference.jsonl"
    result = CliRunner().invoke(cli, [str(a) for a in combination_args(folder, "--weights", weights_file,
                                                                "--backend", "tensorflow", "--predictions-out", out)])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"]["evaluated"] == 6 and report["images"]["failed"] == 1
    assert report["model"]["backends"] == ["tensorflow"]
    return report, records(out)


def test_shards_on_three_runtimes_and_two_engines_merge_into_the_reference(
        cli_run, combination_set, weights_file, reference, jax_runs, ray_with_onnx_cache, onnx_cache, tmp_path):
    folder, root = combination_set
    report, reference_records = reference
    first, second = tmp_path / "shard-1.csv", tmp_path / "shard-2.jsonl"
    runs = [
        cli_run(*combination_args(folder, "--weights", weights_file, "--backend", "onnxruntime", "--shard", "1/3",
                           "--predictions-out", first)),
        cli_run(*combination_args(folder, "--weights", weights_file, "--backend", "tensorflow", "--engine", "ray",
                           "--shard", "2/3", "--predictions-out", second)),
    ]
    for run in runs:
        assert run.exit_code == 0, run.stderr
    on_jax = jax_runs["cases"]["combination-shard-3"]
    assert on_jax["exit_code"] == 0, on_jax["stderr"] or on_jax["exception"]
    third = root / "shard-3.jsonl"
    shards = [first, second, third]
    assert [sorted({r["backend"] for r in records(path) if "backend" in r}) for path in shards] == \
        [["onnxruntime"], ["tensorflow"], ["jax"]]
    assert sum(len(records(path)) for path in shards) == 7

    merged = cli_run("eval", "--from-predictions", *shards, "--json", "--max-failures", "1")
    assert merged.exit_code == 0, merged.stderr
    merged_report = json.loads(merged.stdout)
    assert_same_report(merged_report, report)
    assert merged_report["model"]["backends"] == ["jax", "onnxruntime", "tensorflow"]
    assert_same_records([r for path in shards for r in records(path)], reference_records)

    page = tmp_path / "report.html"
    drawn = cli_run("report", *shards, "-o", page)
    assert drawn.exit_code in (0, 3), drawn.stderr  # the page is drawn; 3 names the unreadable image
    assert "backends: jax, onnxruntime, tensorflow" in page.read_text(encoding="utf-8")


def test_a_run_stopped_by_sigterm_resumes_on_another_engine_and_runtime(
        cli_run, combination_set, weights_file, reference, ray_with_onnx_cache, onnx_cache, tmp_path):
    folder, _ = combination_set
    report, reference_records = reference
    out = tmp_path / "stopped.csv"
    marker = tmp_path / "stopped.marker"
    images = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    stop_at = os.path.basename(images[4])
    # On a TensorFlow node, a decoding thread per image, one image a batch: results leave one batch
    # behind the network, so with the fifth image held the file holds three or four of the others.
    env = {**os.environ, "STOP_AT": stop_at, "STOP_MARKER": str(marker), "PYTHONPATH": str(REPO),
           "KERAS_BACKEND": "tensorflow"}
    child = subprocess.Popen([sys.executable, "-c", STOPPED_RUN,
                              *map(str, combination_args(folder, "--weights", weights_file, "--batch-size", "1",
                                                  "--decoding", "threads", "--predictions-out", out))],
                             env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(240, child.kill)
    watchdog.start()
    try:
        deadline = time.monotonic() + 200
        while not (marker.exists() and out.exists() and out.read_text().count("\n") >= 3):  # header + 2 records
            assert child.poll() is None, f"the run ended first: {child.returncode} {child.stderr.read()}"
            assert time.monotonic() < deadline, "the run did not reach the held image"
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 128 + signal.SIGTERM, child.stderr.read()
    assert child.stdout.read() == ""  # stopped before the report: nothing half-printed
    stopped = records(out)  # whole records only: the file reads back with nothing cut off
    assert 2 <= len(stopped) < 7 and {r["backend"] for r in stopped if "backend" in r} == {"tensorflow"}

    resumed = cli_run(*combination_args(folder, "--weights", weights_file, "--backend", "onnxruntime", "--engine", "ray",
                                 "--predictions-out", out, "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    resumed_report = json.loads(resumed.stdout)
    assert_same_report(resumed_report, report)
    assert resumed_report["model"]["backends"] == ["onnxruntime", "tensorflow"]
    whole = records(out)
    assert [r["path"] for r in whole[:len(stopped)]] == [r["path"] for r in stopped]
    assert_same_records(whole, reference_records)


def _as_local(value, local_of):
    """A report or records with remote paths (URLs, tar members) written as the local files they were made from."""
    text = json.dumps(value)
    for remote, local in sorted(local_of.items(), key=lambda pair: -len(pair[0])):
        text = text.replace(json.dumps(remote)[1:-1], json.dumps(local)[1:-1])
    return json.loads(text)


def _tar_shards(folder, shards_folder):
    """The set's images as two WebDataset tar shards, each image with a .txt sibling naming its class
    folder's WordNet id; the member path -> local file map, given the shards' URL prefix later."""
    images = sorted(p for p in folder.rglob("*") if p.is_file())
    members = {}
    shards_folder.mkdir()
    for shard, part in enumerate((images[:4], images[4:])):
        name = f"val-{shard:06d}.tar"
        with tarfile.open(shards_folder / name, "w") as tar:
            for image in part:
                key = f"{len(members):06d}"
                for member, data in ((f"{key}.txt", image.parent.name.encode()), (f"{key}.jpg", image.read_bytes())):
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                members[f"{name}/{key}.jpg"] = str(image)
    return members


def test_the_set_in_a_bucket_and_in_tar_shards_gives_the_reference_on_every_engine_and_runtime(
        cli_run, combination_set, weights_file, reference, s3, ray_with_onnx_cache, onnx_cache, tmp_path):
    pytest.importorskip("pyarrow")
    folder, _ = combination_set
    report, reference_records = reference
    bucket = s3.new_bucket("combination")
    s3.upload_folder(folder, bucket, "val/")
    prefix = f"s3://{bucket}/val"
    local_of = {f"{prefix}/{p.relative_to(folder).as_posix()}": str(p) for p in folder.rglob("*") if p.is_file()}

    # Two shards over the prefix: the first lists it and saves the listing beside its Parquet records.
    first, second = tmp_path / "bucket-1.parquet", tmp_path / "bucket-2.jsonl"
    runs = [
        cli_run(*combination_args(prefix + "/", "--weights", weights_file, "--backend", "onnxruntime",
                                  "--shard", "1/2", "--predictions-out", first)),
        cli_run(*combination_args(prefix + "/", "--weights", weights_file, "--backend", "tensorflow",
                                  "--engine", "ray", "--shard", "2/2", "--predictions-out", second)),
    ]
    for run in runs:
        assert run.exit_code == 0, run.stderr
    assert (tmp_path / "bucket-1.parquet.listing.json").is_file()
    s3.client.put_object(Bucket=bucket, Key="records/bucket-2.jsonl", Body=second.read_bytes())
    merged = cli_run("eval", "--from-predictions", first, f"s3://{bucket}/records/bucket-2.jsonl", "--json",
                     "--max-failures", "1")
    assert merged.exit_code == 0, merged.stderr
    merged_report = _as_local(json.loads(merged.stdout), local_of)
    assert_same_report(merged_report, report)
    assert merged_report["model"]["backends"] == ["onnxruntime", "tensorflow"]
    assert_same_records(_as_local(records(first) + records(second), local_of), reference_records)

    # The same images as tar shards in the bucket: a run cut short on TensorFlow, resumed on Ray + ONNX Runtime.
    members = _tar_shards(folder, tmp_path / "shards")
    s3.upload_folder(tmp_path / "shards", bucket, "shards/")
    local_of = {f"s3://{bucket}/shards/{member}": path for member, path in members.items()}
    shards = f"s3://{bucket}/shards/val-{{000000..000001}}.tar"
    out = tmp_path / "tar.csv"
    whole = cli_run(*combination_args(shards, "--weights", weights_file, "--backend", "tensorflow",
                                      "--predictions-out", out))
    assert whole.exit_code == 0, whole.stderr
    assert_same_report(_as_local(json.loads(whole.stdout), local_of), report)
    data = out.read_bytes()
    out.write_bytes(data[:len(data) * 2 // 5])  # a run stopped mid-row, part of the way through
    resumed = cli_run(*combination_args(shards, "--weights", weights_file, "--backend", "onnxruntime",
                                        "--engine", "ray", "--predictions-out", out, "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    resumed_report = _as_local(json.loads(resumed.stdout), local_of)
    assert_same_report(resumed_report, report)
    assert resumed_report["model"]["backends"] == ["onnxruntime", "tensorflow"]
    assert_same_records(_as_local(records(out), local_of), reference_records)
