"""Resume as the library does it: classify(resume=) and evaluate(resume=) continue an interrupted run's record
file, skipping the inputs it holds, cutting its half-written tail, so that appending what they yield finishes it."""

import json

import pytest

import resclassify
from conftest import assert_records_match
from resclassify import RecordFileError, records
from resclassify.record_formats import open_file_writer


def write_records(path, found, kind="predict-records", **context):
    with open(path, "a", encoding="utf-8", newline="") as stream:
        writer = open_file_writer(kind, str(path), stream, **context)
        for record in found:
            writer.write(record)
        writer.close()


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_classify_resumed_skips_the_inputs_done_and_finishes_the_file(tmp_path, model, predicted_images):
    paths = [str(path) for path, _ in predicted_images[:4]]
    whole = list(resclassify.classify(paths, model))
    out = tmp_path / "labels.jsonl"
    write_records(out, whole[:2])
    with open(out, "a") as stream:
        stream.write('{"path": "' + paths[2] + '", "pred')  # what a killed run leaves
    new = list(resclassify.classify(paths, model, resume=str(out)))
    assert [record["path"] for record in new] == paths[2:]
    assert len(out.read_text().splitlines()) == 2  # the half-written record cut off
    write_records(out, new)
    assert_records_match(read_jsonl(out), whole)
    # Nothing left: a resumed run of a finished file classifies nothing.
    assert list(resclassify.classify(paths, model, resume=out)) == []


def test_classify_resumed_from_another_run_is_refused_and_leaves_the_file_whole(tmp_path, model, predicted_images):
    paths = [str(path) for path, _ in predicted_images[:2]]
    out = tmp_path / "labels.jsonl"
    write_records(out, list(resclassify.classify(paths[:1], model, top_k=3)))
    with open(out, "a") as stream:
        stream.write('{"path": "half')
    before = out.read_bytes()
    with pytest.raises(RecordFileError, match=r"labels.jsonl was written by another run: top_k 3 in .*, 5 in this run"):
        list(resclassify.classify(paths, model, resume=out))
    assert out.read_bytes() == before


def test_a_resumption_checked_once_is_not_read_again(tmp_path, model, predicted_images, monkeypatch):
    paths = [str(path) for path, _ in predicted_images[:3]]
    out = tmp_path / "labels.jsonl"
    write_records(out, list(resclassify.classify(paths[:1], model)))
    preprocessing = model.preprocessing()
    resumption = records.resume_records(out, paths, records.identity_of_run(model, preprocessing, 5))
    assert (resumption.failed, resumption.header, dict(resumption.done)) == (0, None, {paths[0]: 1})

    def read_again(path):
        raise AssertionError(f"{path} read a second time")

    monkeypatch.setattr(records, "read_record_file", read_again)
    new = list(resclassify.classify(paths, model, preprocessing=preprocessing, resume=resumption))
    assert [record["path"] for record in new] == paths[1:]


def test_evaluate_resumed_counts_the_earlier_records_and_runs_only_the_rest(tmp_path, model, six_eval_folder):
    whole_records = []
    whole = resclassify.evaluate(six_eval_folder, model, on_record=whole_records.append)
    out = tmp_path / "run.csv"
    context = {"ks": (1, 5), "real_labels": False}
    write_records(out, whole_records[:4], "eval-records", **context)
    with open(out, "a") as stream:
        stream.write(whole_records[4]["path"] + ",3")  # a row cut short
    new = []
    report = resclassify.evaluate(six_eval_folder, model, on_record=new.append, resume=out)
    assert [record["path"] for record in new] == [record["path"] for record in whole_records[4:]]
    assert report["resumed"] == 4 and report["images"]["evaluated"] == 6
    for key in ("accuracy", "per_class", "confusions"):
        assert report[key] == whole[key]
    write_records(out, new, "eval-records", header=False, **context)
    finished, _ = resclassify.report_from_prediction_files([out])
    assert finished["accuracy"] == whole["accuracy"]
    assert len(records.read_record_file(out).records) == 6 and not records.read_record_file(out).cut_off


def test_evaluate_resumed_from_a_predict_file_is_refused(tmp_path, model, six_eval_folder, predicted_images):
    out = tmp_path / "labels.jsonl"
    write_records(out, list(resclassify.classify([str(predicted_images[0][0])], model)))
    with pytest.raises(RecordFileError, match="no true class"):
        resclassify.evaluate(six_eval_folder, model, resume=out)
