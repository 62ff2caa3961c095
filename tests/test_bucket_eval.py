"""eval over a bucket prefix (s3://bucket/val/ on moto's S3 server, 127.0.0.1) gives what eval over the same images on
disk gives: class folders and labels files (local or in the bucket), the same reporting of what was left out; shards,
a resumed shard and --from-predictions over a bucket equal one run; a bucket that does not exist is one error line."""

import json
import shutil

from conftest import assert_records_match, jsonl, save_image



def eval_run(cli_run, weights_file, *args):
    return cli_run("eval", *args, "--weights", weights_file, "--device", "cpu", "--backend", "tensorflow")


def renamed(value, local, remote):
    """value (a report, records, stderr) with the local folder's paths spelled as the bucket's URLs."""
    if isinstance(value, str):
        return value.replace(local, remote)
    if isinstance(value, list):
        return [renamed(item, local, remote) for item in value]
    if isinstance(value, dict):
        return {renamed(key, local, remote): renamed(item, local, remote) for key, item in value.items()}
    return value


def same_report(remote, local, local_root, remote_root):
    """Every figure and name equal, the local folder's paths read as URLs; only the time taken differs."""
    local = renamed(local, local_root, remote_root)
    for report in (remote, local):
        report.pop("throughput")
    assert remote == local


def class_folder_set(tmp_path, six_eval_folder):
    """six_eval_folder, plus an image outside any class folder and a second folder naming one class by its label."""
    from eval_datasets import CLASSES

    folder = tmp_path / "val"
    shutil.copytree(six_eval_folder, folder)
    save_image(folder / "stray.jpg", size=(64, 48), seed=40)
    wnid_folder = sorted(p for p in folder.iterdir() if p.is_dir() and len(list(p.iterdir())) > 1)[0]
    by_label = folder / CLASSES.labels[CLASSES.index_of_wnid[wnid_folder.name]]
    by_label.mkdir()
    moved = sorted(wnid_folder.iterdir())[-1]
    moved.rename(by_label / moved.name)
    return folder


def test_eval_over_a_prefix_of_class_folders_equals_the_folder_on_disk(cli_run, weights_file, six_eval_folder,
                                                                      tmp_path, s3):
    folder = class_folder_set(tmp_path, six_eval_folder)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, bucket, "data/val/")
    prefix = f"s3://{bucket}/data/val"
    local = eval_run(cli_run, weights_file, folder, "--json", "--predictions-out", tmp_path / "local.jsonl")
    remote = eval_run(cli_run, weights_file, prefix + "/", "--json", "--predictions-out", tmp_path / "remote.jsonl")
    assert (local.exit_code, remote.exit_code) == (0, 0)
    report = json.loads(remote.stdout)
    assert report["folder"] == prefix
    assert report["images"] == {"found": 7, "labelled": 6, "limit": None, "not_run": 0, "evaluated": 6,
                                "failed": 0, "skipped": 1}
    assert report["skipped"] == {"not in a class folder": {"count": 1, "first": [f"{prefix}/stray.jpg"]}}
    assert len(report["ground_truth"]["merged_class_folders"]) == 1
    assert report["ground_truth"]["layout"] == "class folders named by WordNet ids and Keras labels"
    same_report(report, json.loads(local.stdout), str(folder), prefix)
    # The same warnings, naming the same images and folders.
    assert remote.stderr == renamed(local.stderr, str(folder), prefix)
    assert "1 image skipped, not in a class folder" in remote.stderr and "all name class" in remote.stderr
    records = jsonl(tmp_path / "remote.jsonl")
    assert [r["path"] for r in records] == sorted(f"{prefix}/{p.relative_to(folder).as_posix()}"
                                                  for p in folder.rglob("*.jpg") if p.parent != folder)
    assert_records_match(records, renamed(jsonl(tmp_path / "local.jsonl"), str(folder), prefix))


def labels_set(tmp_path, predicted_images):
    """Six images in a flat folder with a CSV labels file (every way to name an image and a class), a seventh image
    with no label, and a label with no image."""
    from eval_datasets import LAYOUTS, planned_labels

    folder, extra = LAYOUTS["csv"](tmp_path / "flat", [path for path, _ in predicted_images[:6]],
                                   planned_labels(predicted_images))
    save_image(folder / "unlabelled.jpg", size=(64, 48), seed=41)
    labels = extra["labels"]
    labels.write_text(labels.read_text() + "ghost.jpg,tabby\n")
    return folder, labels


def test_eval_over_a_flat_prefix_with_a_labels_file_local_or_in_the_bucket(cli_run, weights_file, predicted_images,
                                                                           tmp_path, s3):
    folder, labels = labels_set(tmp_path, predicted_images)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, bucket, "flat/")
    s3.client.put_object(Bucket=bucket, Key="meta/labels.csv", Body=labels.read_bytes())
    prefix = f"s3://{bucket}/flat"
    local = eval_run(cli_run, weights_file, folder, "--labels", labels, "--json",
                     "--predictions-out", tmp_path / "local.jsonl")
    assert local.exit_code == 0
    for n, labels_argument in enumerate([labels, f"s3://{bucket}/meta/labels.csv"]):
        remote = eval_run(cli_run, weights_file, prefix, "--labels", labels_argument, "--json",
                          "--predictions-out", tmp_path / f"remote{n}.jsonl")
        assert remote.exit_code == 0, remote.stderr
        report = json.loads(remote.stdout)
        assert report["images"]["evaluated"] == 6 and report["ground_truth"]["layout"] == "labels file (CSV)"
        assert report["skipped"] == {"no label in the labels file": {"count": 1, "first": [f"{prefix}/unlabelled.jpg"]}}
        assert report["labels_without_image"] == {str(labels_argument): {"count": 1, "first": ["ghost.jpg"]}}
        expected = json.loads(local.stdout)
        expected["ground_truth"]["labels_file"] = str(labels_argument)
        expected["labels_without_image"] = {str(labels_argument): expected["labels_without_image"][str(labels)]}
        same_report(report, expected, str(folder), prefix)
        assert_records_match(jsonl(tmp_path / f"remote{n}.jsonl"),
                             renamed(jsonl(tmp_path / "local.jsonl"), str(folder), prefix))


def test_shards_a_resumed_shard_and_from_predictions_over_a_bucket_equal_one_run(cli_run, weights_file,
                                                                               six_eval_folder, tmp_path, s3):
    bucket = s3.new_bucket()
    s3.upload_folder(six_eval_folder, bucket, "val/")
    prefix = f"s3://{bucket}/val/"
    whole = eval_run(cli_run, weights_file, prefix, "--json", "--predictions-out", tmp_path / "whole.jsonl")
    assert whole.exit_code == 0
    whole_records = jsonl(tmp_path / "whole.jsonl")
    assert len(whole_records) == 6
    shards = [tmp_path / f"shard-{k}.jsonl" for k in (1, 2, 3)]
    for k in (1, 3):
        result = eval_run(cli_run, weights_file, prefix, "--json", "--shard", f"{k}/3",
                          "--predictions-out", shards[k - 1])
        assert result.exit_code == 0
        assert json.loads(result.stdout)["shard"] == f"{k}/3"
    # Shard 2 stopped after its first record (its file cut mid-line), then resumed.
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    shards[1].write_text(lines[2] + lines[3][:40])
    resumed = eval_run(cli_run, weights_file, prefix, "--json", "--shard", "2/3", "--predictions-out", shards[1],
                       "--resume")
    assert resumed.exit_code == 0
    assert json.loads(resumed.stdout)["resumed"] == 1
    # The listed keys split as files do: contiguous, in sorted order, sizes 2, 2, 2.
    assert [[r["path"] for r in jsonl(shard)] for shard in shards] == \
        [[r["path"] for r in whole_records[n:n + 2]] for n in (0, 2, 4)]
    assert_records_match([r for shard in shards for r in jsonl(shard)], whole_records)

    single = json.loads(whole.stdout)
    merged = cli_run("eval", "--from-predictions", "--json", *shards)
    assert merged.exit_code == 0
    # The shards' files in the bucket read as they do on disk.
    s3.upload_folder(tmp_path, bucket, "runs/")
    in_bucket = [f"s3://{bucket}/runs/{shard.name}" for shard in shards]
    merged_remote = cli_run("eval", "--from-predictions", "--json", *in_bucket)
    assert merged_remote.exit_code == 0, merged_remote.stderr
    for report in (json.loads(merged.stdout), json.loads(merged_remote.stdout)):
        for key in ("accuracy", "per_class", "worst_classes", "confusions", "failed", "preprocessing"):
            assert report[key] == single[key], key
        assert report["images"]["evaluated"] == 6
    assert json.loads(merged_remote.stdout)["prediction_files"] == in_bucket
    page = cli_run("report", *in_bucket, "-o", tmp_path / "report.html")
    assert page.exit_code == 0, page.stderr
    # Thumbnails of the misclassified images, fetched from the bucket as the run read them.
    html = (tmp_path / "report.html").read_text()
    assert html.count('src="data:image/jpeg;base64,') >= 4 and "no preview" not in html


def test_a_bucket_that_does_not_exist_is_one_error_line(cli_run, weights_file, tmp_path, s3, no_model):
    result = eval_run(cli_run, weights_file, "s3://no-such-bucket-here/val/", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "resclassify: error: s3://no-such-bucket-here/val/: no such bucket or object " \
                            "(The specified bucket does not exist)\n"


def test_a_prefix_without_class_folders_or_images_says_so(cli_run, weights_file, tmp_path, s3, no_model):
    bucket = s3.new_bucket()
    save_image(tmp_path / "flat" / "a.jpg", size=(32, 32))
    s3.upload_folder(tmp_path / "flat", bucket, "flat/")
    result = eval_run(cli_run, weights_file, f"s3://{bucket}/flat/")
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: s3://{bucket}/flat: no class folders in it, and no --labels FILE; "
                             "put each class's images in a folder named by WordNet id, Keras label or index, or "
                             "pass --labels\n")
    result = eval_run(cli_run, weights_file, f"s3://{bucket}/nothing/")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"resclassify: error: s3://{bucket}/nothing: no class folders in it")
    missing = cli_run("eval", "--from-predictions", f"s3://{bucket}/runs/none.jsonl")
    assert (missing.exit_code, missing.stderr) == (1, f"resclassify: error: s3://{bucket}/runs/none.jsonl: no such "
                                                      "file\n")


def test_labels_and_real_labels_in_the_bucket_label_the_listed_keys(tmp_path, s3):
    from resclassify import find_ground_truth
    from resclassify.sources.remote import RemoteImage

    bucket = s3.new_bucket()
    for n in range(3):
        save_image(tmp_path / "flat" / f"ILSVRC2012_val_{n + 1:08d}.JPEG", size=(32, 32), seed=n)
    s3.upload_folder(tmp_path / "flat", bucket, "flat/")
    s3.client.put_object(Bucket=bucket, Key="gt.txt", Body=b"1\n2\n3\n")  # the devkit's ILSVRC2012 IDs
    s3.client.put_object(Bucket=bucket, Key="real.json", Body=b"[[449], [], [65, 66]]")
    listed = []

    def lister(url):
        listed.append(url)
        from resclassify.sources.remote import list_images

        return list_images(url)

    truth = find_ground_truth(f"s3://{bucket}/flat/", f"s3://{bucket}/gt.txt", f"s3://{bucket}/real.json",
                              lister=lister)
    assert listed == [f"s3://{bucket}/flat/"]
    urls = [f"s3://{bucket}/flat/ILSVRC2012_val_{n:08d}.JPEG" for n in (1, 3)]
    assert [(image.path, image.real_labels, image.item) for image in truth.images] == \
        [(url, labels, RemoteImage(url, url)) for url, labels in zip(urls, [(449,), (65, 66)])]
    assert [(skipped.path, skipped.reason) for skipped in truth.skipped] == \
        [(f"s3://{bucket}/flat/ILSVRC2012_val_00000002.JPEG", "no ReaL label (excluded by ReaL)")]
    assert truth.layout == "labels file (ILSVRC2012 devkit validation ground truth), hits counted against ReaL labels"
