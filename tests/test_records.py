import io
import json

import pytest

from resclassify.errors import RecordFileError
from resclassify.record_formats import CsvWriter, JsonLinesWriter, PredictionsCsvWriter
from resclassify.records import (cut_to_whole_records, describe_differences, differences, file_fingerprint,
                                 read_record_file)

RUN = {"backend": "tensorflow", "precision": "float32", "weights": "w.h5", "weights_fingerprint": "00ff",
       "classes": 3, "preprocessing": {"name": "squash", "size": 64}, "top_k": 2}


def predict_record(path, first=0):
    return {"path": path, "model": "flowers.keras",
            "predictions": [{"rank": 1, "index": first, "wnid": None, "label": "sea lion", "probability": 0.75},
                            {"rank": 2, "index": 2, "wnid": None, "label": "b, c", "probability": 0.125}],
            "run": RUN}


def eval_record(path, hit):
    return {"path": path, "model": "flowers.keras", "true": {"index": 0, "wnid": None, "label": "sea lion"},
            **{k: v for k, v in predict_record(path, 0 if hit else 1).items() if k in ("predictions",)},
            "hit@1": hit, "hit@2": True, "hit@5": True, "run": RUN}


def written(writer_class, records, *args):
    stream = io.StringIO()
    writer = writer_class(stream, *args)
    for record in records:
        writer.write(record)
    return stream.getvalue()


def test_records_read_back_as_they_were_written(tmp_path):
    records = [predict_record("a.jpg"), {"path": "gone.jpg", "error": "no such file or directory"},
               predict_record("odd,\nname.jpg", 1)]
    for name, writer_class in [("p.jsonl", JsonLinesWriter), ("p.csv", CsvWriter)]:
        path = tmp_path / name
        path.write_text(written(writer_class, records))
        read = read_record_file(path)
        assert read.records == records and not read.cut_off
        assert read.whole_bytes == path.stat().st_size
    evals = [eval_record("a.jpg", True), {"path": "x.jpg", "true": eval_record("x", 1)["true"], "error": "bad"},
             eval_record("b.jpg", False)]
    path = tmp_path / "e.csv"
    path.write_text(written(PredictionsCsvWriter, evals, (1, 2, 5)))
    assert read_record_file(path).records == evals  # labels with spaces and | survive the CSV
    assert read_record_file(tmp_path / "missing.jsonl").records == []


@pytest.mark.parametrize("tail", [b'{"path": "c.jpg", "mod', b"\x00" * 40 + b"\n"])
def test_a_half_written_last_line_is_left_out_and_cut(tmp_path, tail):
    path = tmp_path / "p.jsonl"
    whole = written(JsonLinesWriter, [predict_record("a.jpg"), predict_record("b.jpg")]).encode()
    path.write_bytes(whole + tail)
    read = read_record_file(path)
    assert [r["path"] for r in read.records] == ["a.jpg", "b.jpg"]
    assert read.cut_off and read.whole_bytes == len(whole)
    cut_to_whole_records(read)
    assert path.read_bytes() == whole


def test_a_damaged_line_before_the_last_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"path": "a.jpg"}\nnot json\n{"path": "b.jpg"}\n')
    with pytest.raises(RecordFileError, match=rf"{path}: line 2: not a prediction record"):
        read_record_file(path)
    path = tmp_path / "p.csv"
    path.write_text("name,label\na.jpg,cat\n")
    with pytest.raises(RecordFileError, match=rf"{path}: line 1: not a resclassify record file"):
        read_record_file(path)


def test_csv_rows_of_an_image_cut_short_are_left_out(tmp_path):
    path = tmp_path / "p.csv"
    text = written(CsvWriter, [predict_record("a.jpg"), predict_record("b.jpg")])
    lines = text.splitlines(keepends=True)
    path.write_text("".join(lines[:4]))  # header, a.jpg's two rows, b.jpg's first
    read = read_record_file(path)
    assert [r["path"] for r in read.records] == ["a.jpg"] and read.cut_off
    assert read.whole_bytes == len("".join(lines[:3]).encode())


def test_differences_are_named_field_by_field():
    other = {**RUN, "top_k": 5, "preprocessing": {"name": "squash", "size": 224}}
    found = differences({"model": "m", **RUN}, {"model": "m", **other})
    assert found == [("preprocessing size", 64, 224), ("top_k", 2, 5)]
    assert describe_differences(found, "a.jsonl", "this run") == \
        "preprocessing size 64 in a.jsonl, 224 in this run; top_k 2 in a.jsonl, 5 in this run"


def test_the_weights_fingerprint_tells_files_of_one_size_apart(tmp_path):
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    data = bytearray(range(256)) * 4096
    first.write_bytes(bytes(data))
    data[len(data) // 2] ^= 1  # one byte in the middle, as retrained weights differ everywhere
    second.write_bytes(bytes(data))
    copy = tmp_path / "copy.h5"
    copy.write_bytes(first.read_bytes())
    assert file_fingerprint(first) == file_fingerprint(copy) != file_fingerprint(tmp_path / "missing.h5")
    assert len(file_fingerprint(first)) == 16
    assert file_fingerprint(tmp_path / "missing.h5") is None
    # Sampled, not hashed whole: a change between the samples may go unseen; one at a sample does not.
    sampled = bytearray(first.read_bytes())
    sampled[0] ^= 1
    second.write_bytes(bytes(sampled))
    assert file_fingerprint(second) != file_fingerprint(first)
    json.dumps(file_fingerprint(first))
