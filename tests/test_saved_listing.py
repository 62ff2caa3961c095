"""A prefix a run lists is saved beside its record file (FILE.listing.json): --resume takes it and never lists again,
so a resumed run covers exactly the first run's inputs; --force lists afresh; --shard splits the listed keys."""

import contextlib
import json

import pytest

from conftest import assert_records_match, jsonl, save_image

from resclassify.sources.shards import Shard


def run_args(weights_file, command, *args):
    return [command, *args, "--weights", weights_file, "--device", "cpu", "--backend", "tensorflow"]


@contextlib.contextmanager
def listing_forbidden():
    """A run inside this block that asks the store for a listing fails the test."""
    from resclassify.sources import remote

    def refuse(url):
        raise AssertionError(f"{url} was listed again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(remote, "list_images", refuse)
        yield


def photo_prefix(s3, tmp_path, count=4):
    folder = tmp_path / "photos"
    for n in range(count):
        save_image(folder / f"p{n}.jpg", size=(80 + 8 * n, 60), seed=50 + n)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, bucket, "photos/")
    return bucket, f"s3://{bucket}/photos/"


def test_predict_resume_over_a_prefix_takes_the_saved_listing(cli_run, weights_file, tmp_path, s3):
    bucket, prefix = photo_prefix(s3, tmp_path)
    out = tmp_path / "labels.jsonl"
    first = cli_run(*run_args(weights_file, "predict", prefix, "--output", out))
    assert first.exit_code == 0, first.stderr
    records = jsonl(out)
    urls = [f"{prefix}p{n}.jpg" for n in range(4)]
    assert [r["path"] for r in records] == urls
    listing = tmp_path / "labels.jsonl.listing.json"
    assert json.loads(listing.read_text()) == {"version": 1, "command": "predict", "arguments": [prefix],
                                               "prefixes": {prefix: urls}}
    saved = listing.read_bytes()
    # Killed in the middle of its second record; meanwhile an object was added under the prefix.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:30])
    s3.client.put_object(Bucket=bucket, Key="photos/p9.jpg", Body=(tmp_path / "photos" / "p0.jpg").read_bytes())
    with listing_forbidden():
        resumed = cli_run(*run_args(weights_file, "predict", prefix, "--output", out, "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    assert_records_match(jsonl(out), records)  # exactly the first run's inputs: p9.jpg is not among them
    assert listing.read_bytes() == saved
    # --force starts over: listed again, the new object included, the listing replaced.
    again = cli_run(*run_args(weights_file, "predict", prefix, "--output", out, "--force"))
    assert again.exit_code == 0, again.stderr
    assert [r["path"] for r in jsonl(out)] == urls + [f"{prefix}p9.jpg"]
    assert json.loads(listing.read_text())["prefixes"] == {prefix: urls + [f"{prefix}p9.jpg"]}


def test_eval_resume_over_a_prefix_takes_the_saved_listing(cli_run, weights_file, six_eval_folder, tmp_path, s3):
    bucket = s3.new_bucket()
    keys = s3.upload_folder(six_eval_folder, bucket, "val/")
    prefix = f"s3://{bucket}/val/"
    out = tmp_path / "run.csv"
    first = cli_run(*run_args(weights_file, "eval", prefix, "--json", "--predictions-out", out))
    assert first.exit_code == 0, first.stderr
    listing = json.loads((tmp_path / "run.csv.listing.json").read_text())
    assert listing == {"version": 1, "command": "eval", "arguments": [prefix],
                       "prefixes": {prefix: [f"s3://{bucket}/{key}" for key in keys]}}
    whole = out.read_text()
    lines = whole.splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:20])  # the header and two images, then a cut row
    class_folder = keys[0].split("/")[1]
    s3.client.put_object(Bucket=bucket, Key=f"val/{class_folder}/late.jpg",
                         Body=(six_eval_folder / class_folder / keys[0].split("/")[2]).read_bytes())
    with listing_forbidden():
        resumed = cli_run(*run_args(weights_file, "eval", prefix, "--json", "--predictions-out", out, "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed"] == 2 and report["images"]["found"] == 6 and report["images"]["evaluated"] == 6
    assert report["accuracy"] == json.loads(first.stdout)["accuracy"]
    assert [line.split(",")[0] for line in out.read_text().splitlines()] == \
        [line.split(",")[0] for line in whole.splitlines()]


def test_a_listing_saved_for_other_arguments_is_not_resumed(cli_run, weights_file, tmp_path, no_model):
    out = tmp_path / "labels.jsonl"
    out.write_text("")
    listing = tmp_path / "labels.jsonl.listing.json"
    listing.write_text(json.dumps({"version": 1, "command": "predict", "arguments": ["s3://b/photos/"],
                                   "prefixes": {"s3://b/photos/": ["s3://b/photos/a.jpg"]}}))
    with listing_forbidden():
        result = cli_run(*run_args(weights_file, "predict", "s3://b/other/", "--output", out, "--resume"))
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: {listing}: the run being resumed listed 's3://b/photos/' (predict), "
                             "not 's3://b/other/'; resume with the same arguments, or pass --force instead of "
                             "--resume to start over\n")
    listing.write_text("{not json")
    result = cli_run(*run_args(weights_file, "predict", "s3://b/photos/", "--output", out, "--resume"))
    assert result.exit_code == 1 and result.stderr.startswith(f"resclassify: error: {listing}: not a saved listing")


def test_a_shard_saves_the_whole_listing_and_runs_its_part(cli_run, weights_file, tmp_path, s3):
    bucket, prefix = photo_prefix(s3, tmp_path, count=3)
    out = tmp_path / "part.jsonl"
    result = cli_run(*run_args(weights_file, "predict", prefix, "--shard", "2/2", "--output", out))
    assert result.exit_code == 0, result.stderr
    urls = [f"{prefix}p{n}.jpg" for n in range(3)]
    listing = tmp_path / "part.jsonl.listing.json"
    assert json.loads(listing.read_text())["prefixes"] == {prefix: urls}
    assert [r["path"] for r in jsonl(out)] == Shard(2, 2).take(urls) == urls[1:]
    # Started over on local files, the record file has no listing: the bucket's is not left beside it.
    local = cli_run(*run_args(weights_file, "predict", tmp_path / "photos" / "p0.jpg", "--output", out, "--force"))
    assert local.exit_code == 0
    assert not listing.exists()
