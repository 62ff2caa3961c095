import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import resclassify
from conftest import PROBABILITY_TOLERANCE, REPO, SAMPLE_IMAGES, assert_records_match, jsonl, save_image

SAMPLES = sorted(str(p) for p in SAMPLE_IMAGES.glob("*.jpg"))


def library_records(model, paths, **options):
    return list(resclassify.classify(paths, model, **options))


def test_table_shows_rank_label_wnid_and_percentage_for_each_image(cli_run, weights_file, model):
    result = cli_run("predict", "--weights", weights_file, "--workers", "2", "--threads", "3", *SAMPLES)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    # Above the tables, once and unwrapped: which network, preprocessing and decoding produced them.
    assert lines[0] == ("resnet50, weights resnet50_random.h5 · tensorflow on cpu · center-crop (short side 256, "
                        "centre 224x224, bicubic), caffe normalization · decoding on 2 threads, network on 3 CPU "
                        "threads")
    assert max(len(line) for line in lines[1:]) <= 80
    assert "\x1b[" not in result.stdout  # no colour when stdout is not a terminal
    for record in library_records(model, SAMPLES):
        titles = [i for i, line in enumerate(lines) if line == record["path"]]  # whole, unpadded
        assert len(titles) == 1
        rows = lines[titles[0] + 4: titles[0] + 9]
        for row, p in zip(rows, record["predictions"]):
            cells = [c.strip() for c in row.strip("│ ").split("│")]
            assert cells[:3] == [str(p["rank"]), p["label"], p["wnid"]]
            # Two decimals of a percentage from another run (another compute path): within rounding.
            assert re.fullmatch(r"\d+\.\d\d%", cells[3])
            assert float(cells[3][:-1]) == pytest.approx(p["probability"] * 100, abs=0.005 + 1e-3)


def test_every_format_carries_the_same_predictions(cli_run, weights_file, model):
    expected = library_records(model, SAMPLES, top_k=3)
    assert len({r["predictions"][0]["index"] for r in expected}) == len(SAMPLES)  # fixture tells images apart

    as_jsonl = cli_run("predict", "--weights", weights_file, "-k", "3", "--json", *SAMPLES)
    assert as_jsonl.exit_code == 0
    assert_records_match(jsonl(as_jsonl.stdout), expected)

    as_json = cli_run("predict", "--weights", weights_file, "-k", "3", "--format", "json", *SAMPLES)
    assert as_json.exit_code == 0
    assert_records_match(json.loads(as_json.stdout), expected)

    as_csv = cli_run("predict", "--weights", weights_file, "-k", "3", "--format", "csv", *SAMPLES)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert list(rows[0]) == ["path", "model", "backend", "rank", "index", "wnid", "label", "probability", "error",
                             "run"]
    flattened = [
        {"path": r["path"], "model": "resnet50", "backend": "tensorflow", "rank": str(p["rank"]),
         "index": str(p["index"]), "wnid": p["wnid"], "label": p["label"], "error": "",
         "run": json.dumps(r["run"], separators=(",", ":"))}
        for r in expected for p in r["predictions"]
    ]
    assert [{k: v for k, v in row.items() if k != "probability"} for row in rows] == flattened
    np.testing.assert_allclose([float(row["probability"]) for row in rows],
                               [p["probability"] for r in expected for p in r["predictions"]], **PROBABILITY_TOLERANCE)


def test_worker_processes_give_the_same_records_and_errors_and_the_run_line_says_so(cli_run, weights_file, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    inputs = [SAMPLES[0], str(broken), *SAMPLES[1:]]
    threads = cli_run("predict", "--weights", weights_file, "--json", "--decoding", "threads", *inputs)
    processes = cli_run("predict", "--weights", weights_file, "--json", "--decoding", "processes", "--workers", "2",
                        *inputs)
    assert processes.exit_code == threads.exit_code == 3
    assert processes.stderr == threads.stderr == (
        f"resclassify: error: {broken}: cannot identify image file\n"
        f"resclassify: warning: 1 of {len(inputs)} inputs could not be classified\n")
    assert_records_match(jsonl(processes.stdout), jsonl(threads.stdout))
    table = cli_run("predict", "--weights", weights_file, "--decoding", "processes", "--workers", "4",
                    "--threads", "1", *SAMPLES[:2])
    assert table.exit_code == 0, table.stderr
    # Never more workers than images.
    assert table.stdout.splitlines()[0].endswith(" · decoding on 2 processes, network on 1 CPU thread")


def test_json_record_layout(cli_run, weights_file):
    result = cli_run("predict", "--weights", weights_file, "--json", SAMPLES[0])
    [record] = jsonl(result.stdout)
    assert list(record) == ["path", "model", "backend", "predictions", "run"]
    assert record["model"] == "resnet50" and record["backend"] == "tensorflow"
    # What else tells this run's records from another's: compact, no path of this machine.
    assert record["run"] == {
        "precision": "float32", "weights": "resnet50_random.h5",
        "weights_fingerprint": record["run"]["weights_fingerprint"], "classes": 1000,
        "preprocessing": {"name": "center-crop", "size": 224, "crop_fraction": 0.875, "interpolation": "bicubic",
                          "mode": "caffe", "exact_decode": False, "tta": "none"},
        "top_k": 5}
    assert re.fullmatch(r"[0-9a-f]{16}", record["run"]["weights_fingerprint"])
    assert [list(p) for p in record["predictions"]] == [["rank", "index", "wnid", "label", "probability"]] * 5
    assert [p["rank"] for p in record["predictions"]] == [1, 2, 3, 4, 5]
    probabilities = [p["probability"] for p in record["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(isinstance(p, float) and 0 < p <= 1 for p in probabilities)
    wnids = [line.split("\t") for line in (REPO / "resclassify/data/imagenet_class_index.tsv").read_text().splitlines()[1:]]
    for p in record["predictions"]:
        assert wnids[p["index"]] == [str(p["index"]), p["wnid"], p["label"]]


def test_squash_gives_the_keras_recipe_top_k(tmp_path, cli_run, weights_file):
    import keras
    from keras.applications.resnet50 import preprocess_input

    paths = SAMPLES + [str(save_image(tmp_path / "made.jpg", size=(333, 500), quality=90))]
    reference = keras.applications.ResNet50(weights=None)
    reference.load_weights(str(weights_file))
    result = cli_run("predict", "--weights", weights_file, "--preprocess", "squash", "--json", *paths)
    for path, record in zip(paths, jsonl(result.stdout)):
        image = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)))
        probabilities = reference.predict(preprocess_input(image[None]), verbose=0)[0]
        order = np.argsort(-probabilities)[:5]
        assert [p["index"] for p in record["predictions"]] == order.tolist()
        np.testing.assert_allclose([p["probability"] for p in record["predictions"]], probabilities[order], rtol=1e-4, atol=1e-6)


def test_center_crop_feeds_the_network_the_centre_crop(tmp_path, cli_run, weights_file, model):
    from PIL import Image

    path = save_image(tmp_path / "wide.png", size=(640, 427))
    crop = np.asarray(Image.open(path).resize((383, 256), Image.Resampling.BICUBIC))[16:240, 80:304]
    batch = crop[None].astype(np.float32)[..., ::-1] - np.float32([103.939, 116.779, 123.68])
    probabilities = model.keras_model(batch, training=False).numpy()[0]
    [record] = jsonl(cli_run("predict", "--weights", weights_file, "--json", path).stdout)
    assert [p["index"] for p in record["predictions"]] == np.argsort(-probabilities)[:5].tolist()


def test_bad_inputs_are_reported_and_the_good_ones_still_classified(tmp_path, cli_run, weights_file, model):
    good = [str(save_image(tmp_path / f"good{i}.jpg", seed=i, quality=90)) for i in range(3)]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(good[0], "rb").read()[:3000])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello\n")
    missing = tmp_path / "missing.jpg"
    inputs = [good[0], str(truncated), str(empty), good[1], str(text), str(missing), good[2]]

    result = cli_run("predict", "--weights", weights_file, "--json", *inputs)
    assert result.exit_code == 3
    records = jsonl(result.stdout)
    assert [r["path"] for r in records] == inputs
    # 7 inputs here, 3 in the library run: other batch shapes, so probabilities agree to a tolerance.
    assert_records_match([r for r in records if "predictions" in r], library_records(model, good))
    assert [r["error"] for r in records if "error" in r] == [
        records[1]["error"], "cannot identify image file", "cannot identify image file", "no such file or directory"]
    assert records[1]["error"].startswith("cannot decode image: image file is truncated")
    assert result.stderr.splitlines() == [
        f"resclassify: error: {truncated}: {records[1]['error']}",
        f"resclassify: error: {empty}: cannot identify image file",
        f"resclassify: error: {text}: cannot identify image file",
        f"resclassify: error: {missing}: no such file or directory",
        "resclassify: warning: 4 of 7 inputs could not be classified",
    ]


def test_paths_from_stdin(tmp_path, cli_run, weights_file, model):
    a = str(save_image(tmp_path / "a.png", seed=1))
    b = str(save_image(tmp_path / "b.png", seed=2))
    result = cli_run("predict", "--weights", weights_file, "--json", "-", input=f"{b}\n{a}\n")
    assert result.exit_code == 0
    assert_records_match(jsonl(result.stdout), library_records(model, [b, a]))


def test_folders_and_files_mixed(tmp_path, cli_run, weights_file):
    folder = tmp_path / "photos"
    save_image(folder / "b.jpg", seed=1)
    save_image(folder / "nested/a.JPG", seed=2)
    (folder / "notes.txt").write_text("not an image")
    single = save_image(tmp_path / "first.png", seed=3)
    result = cli_run("predict", "--weights", weights_file, "--json", single, folder)
    assert [r["path"] for r in jsonl(result.stdout)] == [str(single), str(folder / "b.jpg"), str(folder / "nested/a.JPG")]


def test_a_short_last_batch_is_padded_and_gives_the_same_answers(cli_run, weights_file):
    whole = jsonl(cli_run("predict", "--weights", weights_file, "--json", *SAMPLES).stdout)
    batched = jsonl(cli_run("predict", "--weights", weights_file, "--json", "--batch-size", "3", *SAMPLES).stdout)
    assert [[p["index"] for p in r["predictions"]] for r in batched] == [[p["index"] for p in r["predictions"]] for r in whole]
    for a, b in zip(whole, batched):
        np.testing.assert_allclose([p["probability"] for p in a["predictions"]],
                                   [p["probability"] for p in b["predictions"]], **PROBABILITY_TOLERANCE)


def test_missing_imagenet_weights_offline_say_what_to_put_where(tmp_path, cli_run, monkeypatch):
    monkeypatch.delenv("RESCLASSIFY_WEIGHTS_MIRROR")  # --offline never touches the network anyway
    result = cli_run("predict", "--offline", SAMPLES[0])
    assert result.exit_code == 1 and result.stdout == ""
    target = tmp_path / "keras-home" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert result.stderr == (
        "resclassify: error: resnet50_weights_tf_dim_ordering_tf_kernels.h5 is not in the cache and downloads are "
        "off (--offline): on a connected machine, fetch https://storage.googleapis.com/tensorflow/"
        "keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5 (md5 "
        f"2cb95161c43110f7111970584f804107) and put it in {target.parent}; or pass --weights PATH\n"
    )


def test_failed_download_says_what_to_put_where(tmp_path, cli_run):
    result = cli_run("predict", SAMPLES[0])  # the mirror points at a closed port on 127.0.0.1
    target = tmp_path / "keras-home" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert result.exit_code == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        "resclassify: error: cannot download http://127.0.0.1:9/resnet50_weights_tf_dim_ordering_tf_kernels.h5: ")
    assert result.stderr.endswith(
        ": connection refused; without the network, put resnet50_weights_tf_dim_ordering_tf_kernels.h5 "
        f"(md5 2cb95161c43110f7111970584f804107) in {target.parent}, or pass --weights PATH\n")
    assert not target.exists() and not list(target.parent.glob("*.part"))


@pytest.mark.slow  # Keras reads the file
def test_a_weights_file_that_is_not_weights(tmp_path, cli_run):
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("not hdf5")
    result = cli_run("predict", "--weights", bogus, SAMPLES[0])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"resclassify: error: cannot load resnet50 weights from {bogus}: ")
    assert len(result.stderr.splitlines()) == 1


def test_gpu_requested_without_one(cli_run, weights_file):
    result = cli_run("predict", "--weights", weights_file, "--device", "gpu", SAMPLES[0])
    assert result.exit_code == 1
    assert result.stderr == "resclassify: error: --device gpu: TensorFlow sees no GPU on this machine (use --device cpu or auto)\n"


@pytest.mark.parametrize("args", [["--top-k", "0"], ["--format", "xml"], ["--batch-size", "0"], []])
def test_usage_errors_exit_2(cli_run, args):
    assert cli_run("predict", *args, *(["x.jpg"] if args else [])).exit_code == 2


def run_module(*args, env=None, **kwargs):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "resclassify", *map(str, args)], capture_output=True, text=True,
                          env=full_env, **kwargs)


def test_tensorflow_noise_never_reaches_stdout_or_stderr(weights_file):
    result = run_module("predict", "--weights", weights_file, "--json", SAMPLES[0], env={"TF_CPP_MIN_LOG_LEVEL": ""})
    assert result.returncode == 0
    assert result.stderr == ""
    [record] = jsonl(result.stdout)
    assert record["path"] == SAMPLES[0]


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from resclassify.cli import cli\n"
        "for args in (['--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        cli(args, prog_name='resclassify')\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('imported:', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert "Usage: resclassify predict [OPTIONS] INPUT..." in result.stdout
    assert result.stderr == "imported: []\n"


def test_traceback_only_with_debug(tmp_path, weights_file):
    missing = tmp_path / "none.h5"
    quiet = run_module("predict", "--weights", missing, SAMPLES[0])
    assert quiet.returncode == 1
    assert quiet.stderr == f"resclassify: error: weights {missing}: no such file\n"
    loud = run_module("predict", "--weights", missing, SAMPLES[0], env={"RESCLASSIFY_DEBUG": "1"})
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr and "WeightsError" in loud.stderr


def test_table_colours_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    from resclassify.render.tables import TableWriter

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    record = {"path": "x.jpg", "predictions": [
        {"rank": 1, "index": 281, "wnid": "n02123045", "label": "tabby", "probability": 0.5}]}
    colour = re.compile(r"\x1b\[[0-9;]*3[0-7](;[0-9]+)*m")
    coloured = Terminal()
    TableWriter(coloured).write(record)
    assert colour.search(coloured.getvalue())
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    TableWriter(plain).write(record)
    assert "tabby" in plain.getvalue() and not colour.search(plain.getvalue())


def test_hostile_inputs_each_get_their_reason_and_the_rest_is_classified(tmp_path, cli_run, weights_file):
    import base64

    from PIL import Image

    photos = tmp_path / "photos"
    good = save_image(photos / "good.jpg", seed=1, quality=90)
    save_image(photos / "sub" / "nested.png", seed=2, size=(64, 48))
    (photos / "sub" / "up").symlink_to("..")  # would multiply every input, for ever
    (photos / "sub" / "up2").symlink_to("..")
    os.mkfifo(photos / "pipe.jpg")  # no writer: opening it would block for ever
    (photos / "loop.jpg").symlink_to("loop.jpg")
    Image.new("RGB", (100000, 1), (255, 0, 0)).save(photos / "strip.png")  # 372 bytes, 100,000 pixels
    Image.new("RGB", (1, 100000), (0, 255, 0)).save(photos / "tower.png")
    latin1 = os.fsencode(photos) + b"/caf\xe9.jpg"  # a name that is not UTF-8
    with open(latin1, "wb") as file:
        file.write(good.read_bytes())
    fifo_given = tmp_path / "given.jpg"
    os.mkfifo(fifo_given)
    fifo_listed = tmp_path / "listed.jpg"
    os.mkfifo(fifo_listed)
    loop_given = tmp_path / "loop_given.jpg"
    loop_given.symlink_to("loop_given.jpg")

    result = cli_run("predict", "--weights", weights_file, "--json", "-k", "1", photos, fifo_given, loop_given, "-",
                     input=os.fsencode(fifo_listed) + b"\n")
    assert result.exit_code == 3
    records = jsonl(result.stdout)
    by_name = {os.path.basename(r["path"]): r for r in records}
    assert sorted(by_name) == sorted(["caf\ufffd.jpg", "good.jpg", "loop.jpg", "nested.png", "pipe.jpg", "strip.png",
                                      "tower.png", "given.jpg", "loop_given.jpg", "listed.jpg"])
    for name in ["good.jpg", "nested.png", "strip.png", "tower.png", "caf\ufffd.jpg"]:
        assert len(by_name[name]["predictions"]) == 1
    assert by_name["pipe.jpg"]["error"] == "not a regular file: a FIFO (named pipe)"
    assert by_name["given.jpg"]["error"] == "not a regular file: a FIFO (named pipe)"
    assert by_name["listed.jpg"]["error"] == "not a regular file: a FIFO (named pipe)"
    assert by_name["loop.jpg"]["error"] == "symbolic link loop"
    assert by_name["loop_given.jpg"]["error"] == "symbolic link loop"
    # The name that is not UTF-8: valid JSON text, and its bytes recoverable.
    odd = by_name["caf\ufffd.jpg"]
    assert list(odd)[:2] == ["path", "path_base64"]
    assert base64.b64decode(odd["path_base64"]) == latin1
    assert by_name["caf\ufffd.jpg"]["predictions"] == by_name["good.jpg"]["predictions"]
    assert result.stderr.splitlines() == [
        f"resclassify: warning: {photos / 'sub' / 'up'}: symbolic link loop, not followed",
        f"resclassify: warning: {photos / 'sub' / 'up2'}: symbolic link loop, not followed",
        f"resclassify: error: {photos / 'loop.jpg'}: symbolic link loop",
        f"resclassify: error: {photos / 'pipe.jpg'}: not a regular file: a FIFO (named pipe)",
        f"resclassify: error: {fifo_given}: not a regular file: a FIFO (named pipe)",
        f"resclassify: error: {loop_given}: symbolic link loop",
        f"resclassify: error: {fifo_listed}: not a regular file: a FIFO (named pipe)",
        "resclassify: warning: 5 of 10 inputs could not be classified",
    ]


def test_empty_stdin_is_an_error_like_an_empty_folder(cli_run, weights_file):
    result = cli_run("predict", "--weights", weights_file, "--json", "-", input="")
    assert result.exit_code == 3
    assert jsonl(result.stdout) == [{"path": "-", "error": "no paths on stdin"}]
    assert result.stderr.splitlines()[0] == "resclassify: error: -: no paths on stdin"


def test_json_with_another_format_is_a_usage_error(cli_run, tmp_path):
    for other in ("csv", "table", "json"):
        result = cli_run("predict", "--json", "--format", other, "x.jpg")
        assert result.exit_code == 2
        assert f"--json is short for --format jsonl; it does not go with --format {other}" in result.stderr
    # --json with --format jsonl says the same thing twice: fine (here it fails later, on the weights).
    agreeing = cli_run("predict", "--json", "--format", "jsonl", "--weights", tmp_path / "none.h5", "x.jpg")
    assert agreeing.exit_code == 1 and "no such file" in agreeing.stderr


def test_a_newline_in_a_name_does_not_split_the_tables_path_line():
    from resclassify.render.tables import TableWriter

    stream = io.StringIO()
    record = {"path": "new\nline\\" + os.fsdecode(b"\xe9.jpg"), "predictions": [
        {"rank": 1, "index": 281, "wnid": "n02123045", "label": "tabby", "probability": 0.5}]}
    TableWriter(stream).write(record)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "new\\nline\\\\\\xe9.jpg"  # one line, every odd character escaped
    assert "tabby" in stream.getvalue()


def test_help_examples_quote_jq_filters(cli_run):
    # Unquoted, zsh takes .predictions[0].label for a glob and stops with "no matches found".
    texts = [cli_run(*command, "--help").stdout for command in (["predict"], ["eval"])]
    texts.append((REPO / "README.md").read_text())
    uses = [line for text in texts for line in text.splitlines() if "| jq " in line]
    assert uses and all(re.search(r"\| jq (-\w+ )*'[^']+'", line) for line in uses), uses


def test_a_tilde_path_on_stdin_reaches_its_file(cli_run, weights_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    photo = save_image(tmp_path / "photos" / "a.jpg")
    result = cli_run("predict", "--weights", weights_file, "--json", "-", input="~/photos/a.jpg\n")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(photo)]
