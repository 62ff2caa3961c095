"""The same predict and eval cases on TensorFlow (here) and JAX (a process of its own, KERAS_BACKEND=jax)."""

import json

import numpy as np
import pytest

from conftest import BACKEND_TOLERANCE, SAMPLE_IMAGES, assert_records_match, jsonl
from resclassify.pipeline import score


def on_jax(jax_runs, name):
    run = jax_runs["cases"][name]
    assert run["exit_code"] == 0, run["stderr"] or run["exception"]
    return run


def as_tensorflow(records):
    return [{**record, "backend": "tensorflow"} for record in records]


def test_predict_gives_the_same_top5_on_every_test_image(cli_run, parity, jax_runs):
    here = cli_run(*parity["predict"])
    assert here.exit_code == 0, here.stderr
    tensorflow, jax = jsonl(here.stdout), jsonl(on_jax(jax_runs, "predict")["stdout"])
    assert len(tensorflow) == 12
    assert {r["backend"] for r in tensorflow} == {"tensorflow"} and {r["backend"] for r in jax} == {"jax"}
    assert [[p["index"] for p in r["predictions"]] for r in jax] == \
        [[p["index"] for p in r["predictions"]] for r in tensorflow]
    assert_records_match(as_tensorflow(jax), tensorflow, BACKEND_TOLERANCE)


def test_unrounded_probabilities_agree_to_float32_rounding(model, predicted_images, jax_runs):
    images = [str(p) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))] + [str(p) for p, _ in predicted_images]
    tensorflow = np.stack([s.probabilities for s in score(images, model, model.preprocessing(), batch_size=32)])
    jax = np.asarray(jax_runs["probabilities"], dtype=np.float32)
    assert jax_runs["backend"] == "jax" and jax.shape == tensorflow.shape == (12, 1000)
    # Two compilers' float32 convolutions through 50 layers: within 1e-5 (the largest
    # probabilities, near 0.5, within 1e-4 relative), the top 5 identical.
    np.testing.assert_allclose(jax, tensorflow, **BACKEND_TOLERANCE)
    assert np.abs(jax - tensorflow).max() < 5e-5
    assert (np.argsort(-jax, axis=1)[:, :5] == np.argsort(-tensorflow, axis=1)[:, :5]).all()


def test_eval_figures_are_identical(cli_run, parity, jax_runs):
    here = cli_run(*parity["eval"])
    assert here.exit_code == 0, here.stderr
    tensorflow, jax = json.loads(here.stdout), json.loads(on_jax(jax_runs, "eval")["stdout"])
    assert (tensorflow["model"]["backend"], jax["model"]["backend"]) == ("tensorflow", "jax")
    assert (tensorflow["model"]["backends"], jax["model"]["backends"]) == (["tensorflow"], ["jax"])
    for report in (tensorflow, jax):
        del report["throughput"], report["model"]["backend"], report["model"]["backends"]
    assert jax == tensorflow
    assert jax["accuracy"]["top1"]["correct"] == 2 and jax["accuracy"]["top5"]["correct"] == 3


@pytest.mark.parametrize("case", ["own-model", "own-model-h5"])
def test_a_users_own_model_gives_the_same_answers(cli_run, parity, jax_runs, case):
    here = cli_run(*parity[case])
    assert here.exit_code == 0, here.stderr
    tensorflow, jax = jsonl(here.stdout), jsonl(on_jax(jax_runs, case)["stdout"])
    assert [r["predictions"][0]["label"] for r in jax] == ["red", "green", "blue"]
    assert_records_match(as_tensorflow(jax), tensorflow, BACKEND_TOLERANCE)


def test_bfloat16_runs_on_jax(parity, jax_runs):
    records = jsonl(on_jax(jax_runs, "bfloat16")["stdout"])
    assert [r["path"] for r in records] == [str(p) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))]
    for record in records:
        assert record["backend"] == "jax"
        probabilities = [p["probability"] for p in record["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


def test_threads_jax_cannot_bound_are_not_claimed(parity, jax_runs):
    """XLA's CPU runtime takes no thread count but one: --threads 5 is not applied, so nothing says it was."""
    from resclassify.machine import available_cores

    cores = available_cores()
    run = on_jax(jax_runs, "threads")
    assert ("resclassify: warning: --threads 5 does not apply to jax on the CPU (XLA's CPU runtime takes only "
            "--threads 1): the network uses every core; bound the process with taskset to use fewer"
            in run["stderr"].splitlines())
    first = run["stdout"].splitlines()[0]
    assert first.endswith(f"network on {cores} CPU thread{'' if cores == 1 else 's'}"), first
    report = json.loads(on_jax(jax_runs, "threads-eval")["stdout"])
    assert report["decoding"]["network_threads"] == cores
    if cores != 5:
        assert "network on 5 CPU threads" not in run["stdout"]
