"""The ONNX cache under pressure: processes starting together, stops at any point, failures, caches that cannot be written.

A small colour classifier (a user's own .keras model) is exported for real once per module;
the tests' exporters are stand-ins that copy that file (in this process, or as a child process
like the real exporter), so no test here runs TensorFlow's export again or touches ResNet50.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, wait_for
from processes import alive, children
from resclassify import machine
from resclassify.errors import ExportError
from resclassify.runners import onnx as onnx_runner
from resclassify.runners import onnx_cache, onnx_export

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytestmark = pytest.mark.onnx


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """The colour model, its classes, a photo, and its ONNX file exported for real (tf normalization, as the CLI asks)."""
    from PIL import Image

    from weights_factory import colour_image, train_colour_classifier

    folder = tmp_path_factory.mktemp("colours")
    train_colour_classifier(softmax=False).save(folder / "colours.keras")
    (folder / "colours.txt").write_text("red\ngreen\nblue\n")
    photo = folder / "red.png"
    Image.fromarray(colour_image("red", (120, 90), np.random.default_rng(7))).save(photo)
    home = folder / "exported-home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        onnx_runner._classifiers.clear()
        onnx_runner.load_classifier(model_path=folder / "colours.keras", normalization="tf")
        onnx_runner._classifiers.clear()
    [onnx] = (home / "models" / "onnx").glob("*.onnx")
    about = json.loads(onnx.with_suffix(".json").read_text())
    learnt = {k: about[k] for k in ("input_size", "classes", "normalization", "parameters")}
    return SimpleNamespace(model=folder / "colours.keras", classes=folder / "colours.txt", photo=photo, onnx=onnx,
                           learnt=learnt)


@pytest.fixture(autouse=True)
def fresh_sessions():
    onnx_runner._classifiers.clear()
    yield
    onnx_runner._classifiers.clear()


def copying_exporter(colours, calls):
    """A stand-in for the export child, in this process: copies the module's export, as the child would write it."""
    def exporter(job, verbose=False):
        calls.append(job)
        shutil.copyfile(colours.onnx, job["output"])
        return dict(colours.learnt)

    return exporter


# A stand-in for the export child, run as the real one is (export_command): it copies the module's
# export to the job's output (after GO_FILE exists, if set) and answers as the child does.
STAND_IN_CHILD = """
import json, os, shutil, sys, time
job = json.loads(sys.argv[1])
go = os.environ.get("STAND_IN_GO_FILE")
deadline = time.time() + 120
while go and not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
shutil.copyfile(os.environ["STAND_IN_SOURCE"], job["output"])
with open(job["result"], "w") as f:
    json.dump({"ok": True, **json.loads(os.environ["STAND_IN_LEARNT"])}, f)
"""

# The command line, with the export child replaced by STAND_IN_CHILD.
CLI_WITH_STAND_IN = """
import json, sys
from resclassify.runners import onnx_export
child = sys.argv[2]
onnx_export.export_command = lambda job: [sys.executable, "-c", child, json.dumps(job)]
from resclassify.cli import main
sys.argv = ["resclassify"] + sys.argv[3:]
main()
"""


def stand_in_env(colours, **extra):
    return {**os.environ, "PYTHONPATH": str(REPO), "STAND_IN_SOURCE": str(colours.onnx),
            "STAND_IN_LEARNT": json.dumps(colours.learnt), **extra}


def predict_args(colours, *extra):
    return ["predict", "--backend", "onnxruntime", "--model", str(colours.model), "--classes", str(colours.classes),
            "--preprocess-mode", "tf", "--json", *extra, str(colours.photo)]


def start_cli_with_stand_in(colours, child_code, **env):
    return subprocess.Popen([sys.executable, "-c", CLI_WITH_STAND_IN, "_", child_code, *predict_args(colours)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=stand_in_env(colours, **env))


def onnx_folder():
    return onnx_cache.cache_folder()


def the_key(colours):
    return onnx_cache.ExportKey("custom-colours", "custom", f"sha256:{onnx_cache.file_sha256(colours.model)}",
                                 None, "tf")


def blocked_waiters(path):
    """How many processes wait for the flock on path (from /proc/locks, where "->" marks a waiter)."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if "->" in line and f":{inode} " in line)


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="reads /proc (Linux)")


# --- one export per cache key, across processes -----------------------------------------------

@needs_proc
def test_processes_starting_together_export_once_and_the_others_wait_for_it(colours, tmp_path):
    go = tmp_path / "go"
    runs = [start_cli_with_stand_in(colours, STAND_IN_CHILD, STAND_IN_GO_FILE=str(go)) for _ in range(3)]
    try:
        # The first to take the lock exports (its stand-in child waits for the go file); both others
        # must be waiting for that lock before the export is let finish.
        locks = lambda: list(onnx_folder().glob(".*.onnx.lock")) if onnx_folder().is_dir() else []  # noqa: E731
        wait_for(lambda: any(blocked_waiters(p) == 2 for p in locks()))
        lock = next(iter(locks()), None)
    finally:
        go.touch()
        outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err for _, err in outputs]
    [onnx_file] = onnx_folder().glob("*.onnx")
    exporting = (f"resclassify: warning: exporting custom-colours to ONNX once ({onnx_file}); later runs start from "
                 "it without TensorFlow")
    waiting = f"resclassify: warning: another process is exporting custom-colours to ONNX ({onnx_file}); waiting for it"
    said = sorted(err.strip() for _, err in outputs)
    assert said == sorted([exporting, waiting, waiting])
    records = [json.loads(out) for out, _ in outputs]
    assert {r["backend"] for r in records} == {"onnxruntime"}
    assert len({json.dumps(r["predictions"]) for r in records}) == 1
    # The lock goes with its holder; nothing hidden is left.
    assert lock is not None and not lock.exists()
    assert sorted(p.name for p in onnx_folder().iterdir()) == sorted(
        [onnx_file.name, onnx_file.with_suffix(".json").name, onnx_cache.HASHES_FILE])


def test_a_lock_left_by_a_dead_process_is_taken(colours):
    key = the_key(colours)
    onnx_folder().mkdir(parents=True, exist_ok=True)
    key.lock_path.write_text("")  # what a process killed while exporting leaves: the file, no flock
    calls, messages = [], []
    onnx_runner.load_classifier(model_path=colours.model, normalization="tf", notice=messages.append,
                                exporter=copying_exporter(colours, calls))
    assert len(calls) == 1 and len(messages) == 1 and messages[0].startswith("exporting custom-colours")
    assert not key.lock_path.exists()


# --- the file and its record appear together ---------------------------------------------------

@pytest.mark.parametrize("stop_at", [1, 2])
def test_a_stop_between_writing_the_file_and_its_record_leaves_no_half_pair(colours, monkeypatch, stop_at):
    key = the_key(colours)
    real_replace = os.replace
    made = []

    def replace(source, target):
        # The renames that publish this key's files (.onnx and .json), in whatever order they come.
        if os.path.basename(str(target)).startswith(key.file_stem):
            made.append(os.path.basename(str(target)))
            if len(made) == stop_at:
                raise KeyboardInterrupt
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        onnx_runner.load_classifier(model_path=colours.model, normalization="tf",
                                    exporter=copying_exporter(colours, []))
    monkeypatch.setattr(os, "replace", real_replace)
    # Nothing at the model's path, or the model with its record: never a model without its record.
    messages = []
    if key.path.exists():
        assert onnx_cache.cached_export(key, messages.append) is not None and messages == []
    else:
        assert onnx_cache.cached_files() == []
    assert list(onnx_folder().glob(".*")) == []
    # The next run works, saying only what a first run says.
    calls = []
    onnx_runner._classifiers.clear()
    classifier = onnx_runner.load_classifier(model_path=colours.model, normalization="tf", notice=messages.append,
                                             exporter=copying_exporter(colours, calls))
    assert messages in ([], [f"exporting custom-colours to ONNX once ({key.path}); later runs start from it without "
                             "TensorFlow"])
    assert len(calls) == len(messages)
    assert classifier.predict(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 3)


# --- the hash memo ------------------------------------------------------------------------------

HASH_MANY = """
import sys
from resclassify.runners import onnx_cache
for path in sys.argv[1:]:
    onnx_cache.file_sha256(path)
"""


def test_runs_hashing_at_once_keep_each_others_entries(tmp_path):
    files = []
    for run in range(4):
        for i in range(25):
            files.append(tmp_path / f"run{run}" / f"file{i}.h5")
            files[-1].parent.mkdir(exist_ok=True)
            files[-1].write_bytes(f"{run}/{i}".encode())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.Popen([sys.executable, "-c", HASH_MANY, *map(str, files[run * 25:(run + 1) * 25])], env=env)
            for run in range(4)]
    assert [run.wait(timeout=120) for run in runs] == [0] * 4
    memo = json.loads((onnx_folder() / onnx_cache.HASHES_FILE).read_text())
    assert sorted(memo) == sorted(str(f.resolve()) for f in files)
    assert [p.name for p in onnx_folder().iterdir()] == [onnx_cache.HASHES_FILE]  # no lock file left


# --- a failed export is remembered --------------------------------------------------------------

@pytest.fixture
def cpu_machine(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)


def test_a_failed_default_export_is_remembered_until_onnxruntime_is_asked_for(cli_run, colours, cpu_machine,
                                                                              monkeypatch):
    tries = []

    def fails(job, verbose=False):
        tries.append(job)
        raise ExportError("cannot export colours.keras to ONNX: Unsupported op FancyOp")

    monkeypatch.setattr(onnx_export, "run_export_process", fails)
    args = ["predict", "--model", colours.model, "--classes", colours.classes, "--preprocess-mode", "tf", "--json",
            colours.photo]
    first = cli_run(*args)
    assert first.exit_code == 0 and json.loads(first.stdout)["backend"] == "tensorflow"
    assert first.stderr.splitlines()[-1] == ("resclassify: warning: cannot export colours.keras to ONNX: Unsupported "
                                             "op FancyOp; running it on tensorflow instead")
    assert len(tries) == 1

    # Later default runs do not try again: straight to TensorFlow, with one line that says why.
    onnx_runner._classifiers.clear()
    again = cli_run(*args)
    assert again.exit_code == 0 and json.loads(again.stdout)["backend"] == "tensorflow"
    assert again.stderr == ("resclassify: warning: the ONNX export of custom-colours failed in an earlier run (cannot "
                            "export colours.keras to ONNX: Unsupported op FancyOp; --backend onnxruntime tries again); "
                            "running it on tensorflow instead\n")
    assert len(tries) == 1

    # Another tf2onnx (or Keras, or resclassify) may export it: the marker does not hold for it.
    real_versions = onnx_cache.export_versions
    monkeypatch.setattr(onnx_cache, "export_versions", lambda: {**real_versions(), "tf2onnx": "99.0"})
    cli_run(*args)
    assert len(tries) == 2
    monkeypatch.setattr(onnx_cache, "export_versions", real_versions)

    # Asked for by name, the export is tried again; once it works, the default runs use it.
    asked = cli_run(*args, "--backend", "onnxruntime")
    assert asked.exit_code == 1 and len(tries) == 3
    assert asked.stderr.splitlines()[-1] == ("resclassify: error: cannot export colours.keras to ONNX: Unsupported "
                                             "op FancyOp")
    monkeypatch.setattr(onnx_export, "run_export_process", copying_exporter(colours, tries))
    assert cli_run(*args, "--backend", "onnxruntime").exit_code == 0 and len(tries) == 4
    assert list(onnx_folder().glob("*.export-failed.json")) == []
    onnx_runner._classifiers.clear()
    default = cli_run(*args)
    assert json.loads(default.stdout)["backend"] == "onnxruntime" and default.stderr == ""


# --- the export's memory ------------------------------------------------------------------------

def test_the_export_collects_garbage_between_tf2onnx_optimizers():
    """tf2onnx deep-copies the graph before each optimizer; collecting the copies took ResNet50's export from 8.2 to 3.0 GiB."""
    import gc

    optimizer = pytest.importorskip("tf2onnx.optimizer")
    before = dict(optimizer._optimizers)
    collections = []
    callback = lambda phase, info: phase == "start" and info["generation"] == 2 and collections.append(1)  # noqa
    gc.callbacks.append(callback)
    try:
        with onnx_export._garbage_collected_between_optimizers():
            made = [factory() for factory in optimizer._get_optimizers().values()]
    finally:
        gc.callbacks.remove(callback)
    assert [type(m) for m in made] == list(before.values())
    assert len(collections) >= len(before)
    assert optimizer._optimizers == before


# --- stops during an export ---------------------------------------------------------------------

SLOW_CHILD = """
import json, sys, time
job = json.loads(sys.argv[1])
with open(job["output"], "wb") as f:
    f.write(b"half an export" * 1000)
time.sleep(300)
"""


@needs_proc
def test_an_interrupted_export_stops_its_child_and_removes_its_temporary(colours, monkeypatch):
    monkeypatch.setattr(onnx_export, "export_command", lambda job: [sys.executable, "-c", SLOW_CHILD, json.dumps(job)])
    main = threading.get_ident()
    seen = []
    # Children earlier tests left to this process (multiprocessing's resource tracker, forkserver) are not the export's.
    others = set(children(os.getpid()))

    def exporters():
        return [pid for pid in children(os.getpid()) if pid not in others]

    def interrupt_once_exporting():
        if wait_for(lambda: bool(exporters())):
            seen.extend(exporters())
            wait_for(lambda: any(p.stat().st_size for p in onnx_folder().glob(".*.onnx.*.part")), timeout=30)
        signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C, or SIGTERM as the command line routes it

    interrupter = threading.Thread(target=interrupt_once_exporting)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            onnx_runner.load_classifier(model_path=colours.model, normalization="tf")
    finally:
        interrupter.join()
    assert seen and not any(alive(pid) for pid in seen)
    assert sorted(p.name for p in onnx_folder().iterdir()) == [onnx_cache.HASHES_FILE]


@needs_proc
def test_a_run_killed_outright_takes_its_export_child_along_and_the_next_run_cleans_up(cli_run, colours,
                                                                                       monkeypatch):
    run = start_cli_with_stand_in(colours, SLOW_CHILD)
    try:
        assert wait_for(lambda: any(p.stat().st_size for p in onnx_folder().glob(".*.onnx.*.part"))
                        if onnx_folder().is_dir() else False)
        child = children(run.pid)
        assert len(child) == 1
    finally:
        run.kill()
        run.communicate()
    assert wait_for(lambda: not alive(child[0]), timeout=10), "the export child runs on alone"
    [left] = onnx_folder().glob(".*.onnx.*.part")  # a kill -9 leaves its temporary: the next run removes it
    calls = []
    monkeypatch.setattr(onnx_export, "run_export_process", copying_exporter(colours, calls))
    result = cli_run(*predict_args(colours))
    assert result.exit_code == 0, result.stderr
    assert len(calls) == 1 and not left.exists()
    assert sorted(p.name for p in onnx_folder().iterdir() if p.name.startswith(".")) == []


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(colours):
    from resclassify.files import STALE_AGE_S as STALE_PART_AGE_S, lock_writer as _lock

    folder = onnx_folder()
    folder.mkdir(parents=True)
    old = time.time() - STALE_PART_AGE_S - 60
    dead = folder / ".resnet50-224px-caffe-float32-md5-0123456789abcdef.onnx.x1.part"
    dead.write_bytes(b"x" * 1000)
    os.utime(dead, (old, old))
    live_part = folder / ".resnet50-224px-caffe-float32-md5-0123456789abcdef.onnx.x2.part"
    live_part.write_bytes(b"x" * 1000)
    os.utime(live_part, (old, old))
    with open(live_part, "rb") as writer:
        assert _lock(writer) is True  # a slow export in another process holds its file
        onnx_runner.load_classifier(model_path=colours.model, normalization="tf",
                                    exporter=copying_exporter(colours, []))
        assert not dead.exists() and live_part.exists()


# --- each caller's own settings -----------------------------------------------------------------

def test_a_reused_session_keeps_each_callers_notice_and_exporter(colours):
    first_calls, first_messages = [], []
    first = onnx_runner.load_classifier(model_path=colours.model, normalization="tf", notice=first_messages.append,
                                        exporter=copying_exporter(colours, first_calls))
    second_calls, second_messages = [], []
    second = onnx_runner.load_classifier(model_path=colours.model, normalization="tf",
                                         notice=second_messages.append,
                                         exporter=copying_exporter(colours, second_calls))
    assert len(first_calls) == 1 and second_calls == [] and len(first_messages) == 1 and second_messages == []
    assert second.sessions["tf"] is first.sessions["tf"]  # loaded once
    # The second caller asks for another normalization: its export is made through its own settings.
    second.predict(np.zeros((1, 64, 64, 3), np.uint8), normalization="torch")
    assert [job["normalization"] for job in second_calls] == ["torch"] and len(first_calls) == 1
    assert len(second_messages) == 1 and second_messages[0].startswith("exporting custom-colours to ONNX once (")
    assert len(first_messages) == 1


# --- a cache that cannot be written -------------------------------------------------------------

def test_an_unwritable_onnx_cache_runs_keras_by_default_and_is_one_line_when_asked_for(cli_run, colours, cpu_machine):
    folder = onnx_folder()
    folder.parent.mkdir(parents=True)
    folder.write_text("")  # not a folder: no process can write there, root included
    args = ["predict", "--model", colours.model, "--classes", colours.classes, "--preprocess-mode", "tf", "--json",
            colours.photo]
    default = cli_run(*args)
    assert default.exit_code == 0 and json.loads(default.stdout)["backend"] == "tensorflow"
    reason = (f"cannot write to the ONNX cache {folder}: not a folder; set KERAS_HOME to a writable folder (ONNX files "
              "go in $KERAS_HOME/models/onnx), or pass --backend tensorflow")
    assert default.stderr == f"resclassify: warning: {reason}; running it on tensorflow instead\n"
    asked = cli_run(*args, "--backend", "onnxruntime")
    assert (asked.exit_code, asked.stdout, asked.stderr) == (1, "", f"resclassify: error: {reason}\n")
