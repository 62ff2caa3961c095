"""Runs command lines and a library call in a process of its own, for tests of another Keras backend.

Keras picks its backend once per process, so the tests' own process (TensorFlow) cannot run JAX.
The parent starts this with KERAS_BACKEND=jax: python jax_child.py SPEC.json RESULT.json, where
SPEC has "cases" (name -> command-line arguments, run in-process like the cli_run fixture) and
"probabilities" (weights, paths: the raw pipeline output for those images, to compare unrounded).
"""

import json
import sys

import numpy as np
from click.testing import CliRunner


def main(spec_path, result_path):
    from resclassify.cli import cli

    with open(spec_path) as f:
        spec = json.load(f)
    results = {"cases": {}}
    for name, argv in spec["cases"].items():
        outcome = CliRunner().invoke(cli, argv)
        results["cases"][name] = {"exit_code": outcome.exit_code, "stdout": outcome.stdout, "stderr": outcome.stderr,
                                  "exception": None if outcome.exception is None or isinstance(outcome.exception,
                                                                                               SystemExit)
                                  else repr(outcome.exception)}
    wanted = spec.get("probabilities")
    if wanted:
        import resclassify
        from resclassify.pipeline import score

        model = resclassify.load_model(wanted["weights"], device="cpu")
        scored = list(score(wanted["paths"], model, model.preprocessing(), batch_size=wanted["batch_size"]))
        results["probabilities"] = np.stack([s.probabilities for s in scored]).tolist()
        results["backend"] = model.backend
    with open(result_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
