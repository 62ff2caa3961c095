"""The README's examples, run as they are written: each line of its shell blocks through bash, from a copy of
the checkout's sample_images/, with the exit status and what stdout shows checked.

The set-up block (pip install, pytest) is not run here: it is this suite's own set-up (test_docs.py checks
it is what .ci/run runs). `resclassify` on the PATH is a small client that hands its arguments, stdin and
exit status to this test process, which runs them through the CLI in-process: bash still does the
quoting, globbing, pipes and redirections as written, but the network is loaded once instead of once per
line (a TensorFlow process per line costs about 12 s on 2 cores).

"imagenet" weights: the official file's md5 cannot be met by the suite's seeded random weights, so, as
tests/test_cli_weights.py does, the official file name is held to the random file's md5 and a mirror on
127.0.0.1 (RESCLASSIFY_WEIGHTS_MIRROR) serves it: the first run downloads it, checks it, and caches it in
$KERAS_HOME/models as it would the real file.
"""

import base64
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SAMPLE_IMAGES
from resclassify.archs import ARCHS
from resclassify.cli import cli
from resclassify.weights import KNOWN_WEIGHTS, KnownWeights, file_hash

REPO = Path(__file__).resolve().parent.parent
OFFICIAL_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
SOCKET_VARIABLE = "README_TEST_SOCKET"
COMMAND_TIMEOUT_S = 120

# The client bash finds as `resclassify`: no TensorFlow, no resclassify import, so it starts at once.
CLIENT = """\
import base64, json, os, socket, sys
stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
request = {"argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": base64.b64encode(stdin).decode(),
           "environment": {k: v for k, v in os.environ.items() if k.startswith(("RESCLASSIFY_", "KERAS_"))}}
connection = socket.socket(socket.AF_UNIX)
connection.connect(os.environ["%s"])
connection.sendall(json.dumps(request).encode() + b"\\n")
answer = json.loads(connection.makefile("rb").readline())
sys.stdout.buffer.write(base64.b64decode(answer["stdout"]))
sys.stderr.buffer.write(base64.b64decode(answer["stderr"]))
sys.exit(answer["exit_code"])
""" % SOCKET_VARIABLE


def readme_blocks():
    return [block.splitlines() for block in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(),
                                                      flags=re.S)]


def readme_commands():
    """Every line of the README's shell blocks after the set-up block, in order."""
    set_up, *examples = readme_blocks()
    assert set_up == ["pip install -e '.[test]'", "python -m pytest -q"]
    return [line for block in examples for line in block if line.strip()]


class Shell:
    """Runs a README line in bash; `resclassify` there is answered by the CLI in this process."""

    def __init__(self, folder):
        self.folder = folder
        self.calls = []
        bin_dir = folder / ".bin"
        bin_dir.mkdir()
        client = bin_dir / "resclassify"
        client.write_text(f"#!{sys.executable}\n{CLIENT}")
        client.chmod(client.stat().st_mode | stat.S_IXUSR)
        # A short path of its own: a Unix socket's path is limited to about 100 bytes, and tmp_path may be longer.
        self.socket_folder = tempfile.mkdtemp(prefix="readme-")
        self.socket_path = os.path.join(self.socket_folder, "cli.sock")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.socket_path)
        self.listener.listen()
        self.listener.settimeout(0.05)
        self.environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                            SOCKET_VARIABLE: self.socket_path}

    def run(self, line):
        """(exit status, stdout, stderr) of `bash -c line`, serving its resclassify calls meanwhile.

        They are served here, on the main thread, because the CLI sets signal handlers, which Python
        allows on the main thread only.
        """
        process = subprocess.Popen(["bash", "-c", line], cwd=self.folder, env=self.environment,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{line!r} ran past {COMMAND_TIMEOUT_S} s")
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(COMMAND_TIMEOUT_S)
                self.serve(connection)
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
        return process.returncode, stdout.decode(), stderr.decode()

    def serve(self, connection):
        request = json.loads(connection.makefile("rb").readline())
        assert request["cwd"] == str(self.folder)
        # The CLI runs with this process's environment: a README line that sets its own would not be run as written.
        ours = {k: v for k, v in os.environ.items() if k.startswith(("RESCLASSIFY_", "KERAS_"))}
        assert request["environment"] == ours, "a README line with its own RESCLASSIFY_/KERAS_ variables"
        self.calls.append(request["argv"])
        result = CliRunner().invoke(cli, request["argv"], input=base64.b64decode(request["stdin"]),
                                    catch_exceptions=False)
        answer = {"stdout": base64.b64encode(result.stdout_bytes).decode(),
                  "stderr": base64.b64encode(result.stderr_bytes).decode(), "exit_code": result.exit_code}
        connection.sendall(json.dumps(answer).encode() + b"\n")

    def close(self):
        self.listener.close()
        shutil.rmtree(self.socket_folder)


@pytest.fixture
def readme_shell(tmp_path, weights_file, weights_server, monkeypatch):
    """A scratch folder holding a copy of sample_images/, where "imagenet" is the suite's random ResNet50."""
    monkeypatch.setitem(KNOWN_WEIGHTS, "resnet50", KnownWeights("resnet50", file_hash(weights_file, "md5"), 98))
    weights_server.files["/" + OFFICIAL_NAME] = weights_file.read_bytes()
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    folder = tmp_path / "checkout"
    folder.mkdir()
    shutil.copytree(SAMPLE_IMAGES, folder / "sample_images")
    monkeypatch.chdir(folder)
    shell = Shell(folder)
    yield shell
    shell.close()


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


SAMPLES = sorted(f"sample_images/{path.name}" for path in SAMPLE_IMAGES.glob("*.jpg"))
LABELS = {line.split("\t")[2] for line in (REPO / "resclassify" / "data" / "imagenet_class_index.tsv")
          .read_text().splitlines()[1:]}


def check_table(stdout, paths, top_k=5):
    assert stdout.startswith(f"resnet50, weights {OFFICIAL_NAME} · tensorflow on cpu · center-crop"), stdout
    lines = stdout.splitlines()
    for path in paths:
        at = lines.index(path)  # each input's path on its own line, its top-k table below it
        assert [line.split("│")[1].strip() for line in lines[at + 4: at + 4 + top_k]] == [
            str(rank) for rank in range(1, top_k + 1)]


def check_labels(stdout, tmp):
    labels = stdout.splitlines()
    assert len(labels) == len(SAMPLES) and set(labels) <= LABELS


def check_csv(stdout, tmp):
    assert stdout == ""
    rows = (tmp / "labels.csv").read_text().splitlines()
    assert rows[0].startswith("path,") and len(rows) == 1 + 5 * len(SAMPLES)
    assert sorted({row.split(",")[0] for row in rows[1:]}) == SAMPLES


def check_summary(stdout, tmp):
    assert stdout.startswith("Evaluation of val\n"), stdout
    assert re.search(r"^Images: +2 evaluated, 0 failed, 0 skipped", stdout, flags=re.M), stdout
    assert "│ top-1 │" in stdout and "│ top-5 │" in stdout


def check_top1(stdout, tmp):
    assert float(stdout) in (0.0, 50.0, 100.0), stdout


def check_shard(number):
    def check(stdout, tmp):
        records = json_lines((tmp / f"val-{number}.jsonl").read_text())
        assert [record["true"]["label"] for record in records] == [("espresso", "tabby")[number - 1]]
        assert re.search(r"^Images: +1 evaluated, 0 failed, 0 skipped", stdout, flags=re.M), stdout
    return check


def check_merged(stdout, tmp):
    assert "val-1.jsonl" in stdout and "val-2.jsonl" in stdout, stdout
    assert re.search(r"^Images: +2 evaluated, 0 failed", stdout, flags=re.M), stdout
    assert "│ top-1 │" in stdout and "│ top-5 │" in stdout


def check_not_cached(stdout, tmp):
    assert stdout.splitlines() == [arch for arch in ARCHS if arch != "resnet50"]


def check_weights_path(stdout, tmp):
    assert stdout == f"{os.environ['KERAS_HOME']}/models/{OFFICIAL_NAME}\n"


def nothing_on_stdout(stdout, tmp):
    assert stdout == ""


def check_parquet_written(stdout, tmp):
    check_summary(stdout, tmp)
    assert (tmp / "val.parquet").is_file() and not (tmp / "val.parquet.partial.jsonl").exists()


def check_parquet_read(stdout, tmp):
    # pandas prints a frame: a header naming the columns, then one row per image in sorted order.
    lines = stdout.splitlines()
    assert "path" in lines[0] and "hit@1" in lines[0], stdout
    assert [line.split()[1] for line in lines[1:]] == ["val/espresso/coffee.jpg", "val/tabby/cat.jpg"], stdout


def check_bucket_eval(stdout, tmp):
    assert stdout.startswith("Evaluation of s3://my-bucket/val\n"), stdout
    assert re.search(r"^Images: +2 evaluated, 0 failed, 0 skipped", stdout, flags=re.M), stdout
    records = json_lines((tmp / "bucket.jsonl").read_text())
    assert [record["path"] for record in records] == ["s3://my-bucket/val/espresso/coffee.jpg",
                                                      "s3://my-bucket/val/tabby/cat.jpg"]
    assert json.loads((tmp / "bucket.jsonl.listing.json").read_text())["prefixes"] == {
        "s3://my-bucket/val/": [record["path"] for record in records]}


def check_tar_labels(stdout, tmp):
    lines = stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["photos-000000.tar/cat.jpg", "photos-000000.tar/coffee.jpg"]
    assert all(line.split(" ", 1)[1] in LABELS for line in lines), stdout


def bucket_of_val(s3, tmp):
    """The README's bucket: my-bucket on the suite's S3 server, holding the val/ folder the lines before it made."""
    s3.client.create_bucket(Bucket="my-bucket")
    s3.upload_folder(tmp / "val", "my-bucket", "val/")


# What a README line needs in place before it runs, beyond what the lines before it made.
BEFORE = {
    "resclassify eval s3://my-bucket/val/ --predictions-out bucket.jsonl": bucket_of_val,
}

# What each README line must print on stdout (besides exiting 0). A README line this table does not know
# fails the test: a new example gets its check here.
EXPECTED = {
    "resclassify predict sample_images/cat.jpg": lambda out, tmp: check_table(out, ["sample_images/cat.jpg"]),
    "resclassify predict sample_images/": lambda out, tmp: check_table(out, SAMPLES),
    "resclassify predict --top-k 3 sample_images/cat.jpg sample_images/coffee.jpg":
        lambda out, tmp: check_table(out, ["sample_images/cat.jpg", "sample_images/coffee.jpg"], top_k=3),
    "find sample_images -name '*.jpg' | resclassify predict --json - | jq -r '.predictions[0].label'": check_labels,
    "resclassify predict --format csv sample_images/ > labels.csv": check_csv,
    "mkdir -p val/tabby val/espresso": nothing_on_stdout,
    "cp sample_images/cat.jpg val/tabby/ && cp sample_images/coffee.jpg val/espresso/": nothing_on_stdout,
    "resclassify eval val": check_summary,
    "resclassify eval val --json | jq '.accuracy.top1.accuracy_percent'": check_top1,
    "resclassify eval val --shard 1/2 --predictions-out val-1.jsonl": check_shard(1),
    "resclassify eval val --shard 2/2 --predictions-out val-2.jsonl": check_shard(2),
    "resclassify eval --from-predictions val-*.jsonl": check_merged,
    "resclassify eval val --predictions-out val.parquet": check_parquet_written,
    "python -c \"import pandas; print(pandas.read_parquet('val.parquet')[['path', 'hit@1']])\"": check_parquet_read,
    "resclassify eval s3://my-bucket/val/ --predictions-out bucket.jsonl": check_bucket_eval,
    "tar -cf photos-000000.tar -C sample_images cat.jpg coffee.jpg": nothing_on_stdout,
    "resclassify predict --json 'photos-{000000..000000}.tar' | jq -r '.path + \" \" + .predictions[0].label'":
        check_tar_labels,
    "resclassify weights list --json | jq -r 'select(.cached | not) | .model'": check_not_cached,
    "resclassify weights path resnet50": check_weights_path,
    "resclassify predict --offline sample_images/cat.jpg": lambda out, tmp: check_table(out, ["sample_images/cat.jpg"]),
}


@pytest.mark.slow
def test_the_readmes_examples_run_as_written(readme_shell, s3):
    commands = readme_commands()
    assert commands and all(command in EXPECTED for command in commands), \
        [command for command in commands if command not in EXPECTED]
    for command in commands:
        if command in BEFORE:
            BEFORE[command](s3, readme_shell.folder)
        exit_status, stdout, stderr = readme_shell.run(command)
        assert exit_status == 0, f"{command}\n{stderr}"
        EXPECTED[command](stdout, readme_shell.folder)
    # The first run downloaded the weights from the mirror; every resclassify line went through the CLI.
    assert (Path(os.environ["KERAS_HOME"]) / "models" / OFFICIAL_NAME).is_file()
    assert len(readme_shell.calls) == sum(command.count("resclassify ") for command in commands)
