"""`--weights`, `--offline` and the `weights` commands from the command line: stdout, stderr and exit status apart."""

import hashlib
import json

import pytest

from conftest import save_image
from resclassify.weights import KNOWN_WEIGHTS, KnownWeights, cache_dir

OFFICIAL_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"


def file_md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def official_weights(weights_file, monkeypatch):
    """The test's random ResNet50 file stands for Keras's: the known md5 is made its own."""
    monkeypatch.setitem(KNOWN_WEIGHTS, "resnet50", KnownWeights("resnet50", file_md5(weights_file), 98))
    return weights_file


@pytest.fixture
def mirror(weights_server, official_weights, monkeypatch):
    weights_server.files["/" + OFFICIAL_NAME] = official_weights.read_bytes()
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    return weights_server


@pytest.fixture
def image(tmp_path):
    return save_image(tmp_path / "photo.jpg")


def one_error_line(result):
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("resclassify: error: ")
    return lines[0]


def test_predict_downloads_once_then_works_offline(cli_run, mirror, image, monkeypatch):
    result = cli_run("predict", "--json", "-k", "1", image)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "resnet50"
    # stderr is not a terminal here: no progress bar, and nothing from Keras.
    assert result.stderr == ""
    assert (cache_dir() / OFFICIAL_NAME).is_file()
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", "http://127.0.0.1:9/")
    offline = cli_run("predict", "--offline", "--json", "-k", "1", image)
    assert offline.exit_code == 0, offline.stderr
    assert offline.stdout == result.stdout
    assert len(mirror.requests) == 1


def test_offline_without_the_file_is_one_line(cli_run, mirror, image):
    result = cli_run("predict", "--offline", image)
    assert result.exit_code == 1
    assert result.stdout == ""
    line = one_error_line(result)
    assert OFFICIAL_NAME in line and mirror.url("/" + OFFICIAL_NAME) in line
    assert KNOWN_WEIGHTS["resnet50"].md5 in line and str(cache_dir()) in line
    assert mirror.requests == []


def test_offline_variable(cli_run, mirror, image, monkeypatch):
    monkeypatch.setenv("RESCLASSIFY_OFFLINE", "yes")
    result = cli_run("predict", image)
    # The error names what turned downloads off: here the variable, not an option never given.
    assert result.exit_code == 1 and "downloads are off (RESCLASSIFY_OFFLINE=yes)" in one_error_line(result)
    assert "--offline" not in result.stderr
    assert mirror.requests == []
    flag = cli_run("predict", "--offline", image)
    assert "downloads are off (--offline)" in one_error_line(flag)


def test_weights_download_offline_suggests_nothing_it_does_not_take(cli_run, mirror, monkeypatch):
    monkeypatch.setenv("RESCLASSIFY_OFFLINE", "1")
    result = cli_run("weights", "download", "resnet50")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "downloads are off (RESCLASSIFY_OFFLINE=1)" in line and OFFICIAL_NAME in line
    assert "--weights" not in line
    assert mirror.requests == []


def test_refused_connection_is_one_line(cli_run, image):
    result = cli_run("predict", image)
    assert result.exit_code == 1
    assert f"cannot download http://127.0.0.1:9/{OFFICIAL_NAME}: connection refused" in one_error_line(result)


def test_404_is_one_line(cli_run, weights_server, image, monkeypatch):
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    result = cli_run("predict", image)
    assert result.exit_code == 1
    assert "HTTP 404 Not Found" in one_error_line(result)


def test_debug_variable_shows_the_traceback(cli_run, image, monkeypatch):
    from resclassify.errors import WeightsError

    monkeypatch.setenv("RESCLASSIFY_DEBUG", "1")
    with pytest.raises(WeightsError):
        cli_run("predict", image)


def test_unwritable_cache_suggests_keras_home(cli_run, mirror, image, tmp_path, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    monkeypatch.setenv("KERAS_HOME", str(blocker / "sub"))
    result = cli_run("predict", image)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "cannot write to the weights cache" in line and "set KERAS_HOME to a writable folder" in line


def test_checksum_fragment_through_the_cli(cli_run, weights_server, weights_file, image):
    weights_server.files["/w/mine.h5"] = weights_file.read_bytes()
    sha = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    good = cli_run("predict", "--json", "--weights", weights_server.url("/w/mine.h5") + f"#sha256={sha}", image)
    assert good.exit_code == 0, good.stderr
    weights_server.files["/w/other.h5"] = weights_file.read_bytes()
    bad = cli_run("predict", "--weights", weights_server.url("/w/other.h5") + "#md5=" + "0" * 32, image)
    assert bad.exit_code == 1
    assert f"md5 is {file_md5(weights_file)}, expected {'0' * 32}" in one_error_line(bad)
    # A cached file whose hash is not the one asked for is fetched again, with a warning.
    again = cli_run("predict", "--weights", weights_server.url("/w/mine.h5") + "#md5=" + "0" * 32, image)
    assert again.exit_code == 1
    assert again.stderr.startswith("resclassify: warning: ") and "downloading it again" in again.stderr


def test_model_does_not_go_with_arch_or_weights(cli_run, image, tmp_path):
    for extra in (["--arch", "resnet101"], ["--weights", "x.h5"]):
        result = cli_run("predict", "--model", tmp_path / "m.keras", *extra, image)
        assert result.exit_code == 2
        assert "--model is a whole model" in result.stderr


def test_weights_list(cli_run, official_weights):
    result = cli_run("weights", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cache folder: {cache_dir()}"
    assert lines[1].split() == ["model", "file", "size", "md5", "cached", "path"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == list(KNOWN_WEIGHTS)
    assert rows["resnet152v2"].split()[1:] == ["resnet152v2_weights_tf_dim_ordering_tf_kernels.h5", "~232", "MiB",
                                               "a49b44d1979771252814e80f8ec446f9", "no",
                                               str(cache_dir() / "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5")]
    cache_dir().mkdir(parents=True)
    (cache_dir() / OFFICIAL_NAME).write_bytes(official_weights.read_bytes())
    (cache_dir() / "resnet101_weights_tf_dim_ordering_tf_kernels.h5").write_bytes(b"truncated")
    rows = {line.split()[0]: line for line in cli_run("weights", "list").stdout.splitlines()[2:]}
    assert " 98.2 MiB " in rows["resnet50"] and " yes " in rows["resnet50"]
    assert " damaged (wrong md5) " in rows["resnet101"]


def test_weights_list_json(cli_run):
    records = [json.loads(line) for line in cli_run("weights", "list", "--json").stdout.splitlines()]
    assert [r["model"] for r in records] == list(KNOWN_WEIGHTS)
    assert records[0] == {
        "model": "resnet50", "file": OFFICIAL_NAME, "size": None, "md5": KNOWN_WEIGHTS["resnet50"].md5,
        "cached": False, "state": "missing", "path": str(cache_dir() / OFFICIAL_NAME),
        "url": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + OFFICIAL_NAME,
    }


def test_weights_list_in_every_format(cli_run):
    lines = [json.loads(line) for line in cli_run("weights", "list", "--json").stdout.splitlines()]
    assert cli_run("weights", "list", "--format", "jsonl").stdout == cli_run("weights", "list", "--json").stdout
    assert json.loads(cli_run("weights", "list", "--format", "json").stdout) == lines
    rows = cli_run("weights", "list", "--format", "csv").stdout.splitlines()
    assert rows[0] == "model,file,size,md5,cached,state,path,url"
    assert rows[1] == (f"resnet50,{OFFICIAL_NAME},,{KNOWN_WEIGHTS['resnet50'].md5},False,missing,"
                       f"{cache_dir() / OFFICIAL_NAME},{lines[0]['url']}")
    assert len(rows) == 1 + len(KNOWN_WEIGHTS)


def test_keras_home_that_is_a_file_is_one_line_for_list_and_path(cli_run, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "afile"))
    expected = (f"resclassify: error: KERAS_HOME={tmp_path / 'afile'} is not a folder; set KERAS_HOME to a "
                "writable folder (weights go in $KERAS_HOME/models)\n")
    for args in (["list"], ["list", "--json"], ["path", "resnet50"]):
        result = cli_run("weights", *args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", expected), args


def test_info_with_a_keras_home_that_is_a_file_shows_the_rest_and_names_the_problem(cli_run, tmp_path, monkeypatch):
    import resclassify

    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "afile"))
    problem = (f"KERAS_HOME={tmp_path / 'afile'} is not a folder; set KERAS_HOME to a writable folder (weights go "
               "in $KERAS_HOME/models)")
    text = cli_run("info")
    assert (text.exit_code, text.stderr) == (0, "")
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["resclassify", resclassify.__version__]
    assert any(line.startswith("backend ") for line in lines)
    assert f"cache folder    {tmp_path / 'afile' / 'models'}" in lines
    assert f"cache problem   {problem}" in lines
    assert "cached weights  none" in lines
    info = json.loads(cli_run("info", "--json").stdout)
    assert info["cache_problem"] == problem and info["cached_weights"] == [] and info["cached_onnx"] == []
    assert info["resclassify"] == resclassify.__version__


def test_an_unreadable_cached_file_is_one_line_for_list(cli_run, monkeypatch):
    import errno

    from resclassify import weights

    cache_dir().mkdir(parents=True)
    (cache_dir() / OFFICIAL_NAME).write_bytes(b"weights on a failing disk")

    def failing_hash(path, algorithm):
        raise OSError(errno.EIO, "Input/output error")

    # As root (as tests often run in containers) no file mode makes a file unreadable: the
    # disk error is made where the file is read.
    monkeypatch.setattr(weights, "file_hash", failing_hash)
    result = cli_run("weights", "list")
    assert result.exit_code == 1
    assert result.stderr == f"resclassify: error: {cache_dir() / OFFICIAL_NAME}: cannot read: Input/output error\n"


def test_weights_download_and_path(cli_run, mirror):
    result = cli_run("weights", "download")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{cache_dir() / OFFICIAL_NAME}\n"
    assert "resnet50: downloaded" in result.stderr
    again = cli_run("weights", "download", "resnet50")
    assert again.stdout == result.stdout and "already in the cache" in again.stderr
    assert len(mirror.requests) == 1
    assert cli_run("weights", "path", "resnet50").stdout == result.stdout


def test_weights_download_failure_is_one_line(cli_run, weights_server, monkeypatch):
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    result = cli_run("weights", "download", "-q", "resnet101v2")
    assert result.exit_code == 1 and result.stdout == ""
    assert "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5: HTTP 404" in one_error_line(result)
    assert "--weights" not in result.stderr  # weights download takes no --weights


def test_weights_download_refuses_unknown_models(cli_run):
    result = cli_run("weights", "download", "vgg16")
    assert result.exit_code == 2 and "resnet152v2" in result.stderr


def test_weights_verify_loads_into_the_architecture(cli_run, weights_file):
    result = cli_run("weights", "verify", weights_file)
    assert result.exit_code == 0, result.stderr
    assert f"md5     {file_md5(weights_file)} (no known checksum for this file name)" in result.stdout
    assert "loads   into resnet50 (25,636,712 parameters)" in result.stdout
    wrong = cli_run("weights", "verify", "--arch", "resnet101", weights_file)
    assert wrong.exit_code == 1
    assert f"cannot load resnet101 weights from {weights_file}" in one_error_line(wrong)


def test_weights_verify_checks_known_files(cli_run, weights_file, official_weights, tmp_path):
    copy = tmp_path / OFFICIAL_NAME
    copy.write_bytes(weights_file.read_bytes())
    assert "matches Keras's resnet50 file" in cli_run("weights", "verify", copy).stdout
    copy.write_bytes(weights_file.read_bytes()[:-10])
    result = cli_run("weights", "verify", copy)
    assert result.exit_code == 1
    assert f"md5 is {file_md5(copy)}, expected {file_md5(weights_file)}" in one_error_line(result)


def run_on_a_terminal(args, md5):
    """`python -m resclassify ARGS` with stderr on a pseudo-terminal, as a person runs it; (stdout, stderr)."""
    import os
    import pty
    import subprocess
    import sys

    # The child holds the test's file to the known md5, as the official_weights fixture does here.
    code = ("import sys, resclassify.weights as w; "
            f"w.KNOWN_WEIGHTS['resnet50'] = w.KnownWeights('resnet50', {md5!r}, 98); "
            "from resclassify.cli import main; sys.argv[0] = 'resclassify'; main()")
    controller, terminal = pty.openpty()
    try:
        child = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=terminal,
                               text=True, timeout=60)
    finally:
        os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's other end is closed: all is read
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return child.stdout, shown.decode("utf-8", "replace")


def test_download_bar_on_a_terminal_and_never_with_quiet(mirror, official_weights):
    stdout, shown = run_on_a_terminal(["weights", "download"], file_md5(official_weights))
    assert stdout == f"{cache_dir() / OFFICIAL_NAME}\n"
    assert f"downloading {OFFICIAL_NAME}" in shown and "resnet50: downloaded" in shown
    (cache_dir() / OFFICIAL_NAME).unlink()
    stdout, shown = run_on_a_terminal(["weights", "download", "--quiet"], file_md5(official_weights))
    assert stdout == f"{cache_dir() / OFFICIAL_NAME}\n"
    assert shown == ""
    assert len(mirror.requests) == 2
