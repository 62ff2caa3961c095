"""Tar shards in the WebDataset layout (sources/tars.py): named as a path, a glob or the brace form, indexed
without unpacking, predicted and evaluated member by member, locally and in an S3 bucket."""

import io
import json
import tarfile

import pytest

from conftest import assert_records_match, jsonl, save_image
from eval_datasets import CLASSES, planned_labels
from resclassify.errors import DatasetError, InputError
from resclassify.sources.inputs import expand_inputs, find_ground_truth
from resclassify.sources.remote import RemoteImage
from resclassify.sources.tars import expand_braces, names_tar_shards


def write_shard(path, members):
    """A tar at path holding members [(name, bytes)], in that order, as WebDataset's writers make them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cli(*args):
    return [*args, "--device", "cpu", "--backend", "tensorflow"]


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory):
    """Five small photos as loose files (what a tar of them must equal)."""
    folder = tmp_path_factory.mktemp("loose")
    return [save_image(folder / f"{n:06d}.jpg", size=(64, 48), seed=40 + n, quality=90) for n in range(5)]


@pytest.fixture
def two_shards(tmp_path, small_photos):
    """small_photos in two shards (3 + 2 members), each image with a .cls sibling; and the shards' folder."""
    folder = tmp_path / "shards"
    for shard, numbers in enumerate([(0, 1, 2), (3, 4)]):
        members = []
        for n in numbers:
            members += [(f"{n:06d}.cls", str(n).encode()), (f"{n:06d}.jpg", small_photos[n].read_bytes())]
        write_shard(folder / f"val-{shard:06d}.tar", members)
    return folder


def member_paths(shards_folder):
    return [f"{shards_folder}/val-000000.tar/{n:06d}.jpg" for n in range(3)] + \
        [f"{shards_folder}/val-000001.tar/{n:06d}.jpg" for n in range(3, 5)]


def as_loose(records, photos):
    """Records of tar members with the paths of the loose files they were made from."""
    return [{**record, "path": str(photo)} for record, photo in zip(records, photos)]


# --- naming shards ----------------------------------------------------------------------------------

def test_brace_form_expands_zero_padded_ranges_and_lists():
    assert expand_braces("val-{000008..000011}.tar") == [f"val-{n:06d}.tar" for n in range(8, 12)]
    assert expand_braces("{train,val}-{1..2}.tar") == ["train-1.tar", "train-2.tar", "val-1.tar", "val-2.tar"]
    assert expand_braces("{3..1}.tar") == ["3.tar", "2.tar", "1.tar"]
    assert names_tar_shards("s3://b/val-{000000..000099}.tar") and names_tar_shards("shards/*.tar")
    assert not names_tar_shards("photos/") and not names_tar_shards("{a.tar,b.jpg}")


def test_predict_over_a_tar_equals_the_loose_files(cli_run, weights_file, small_photos, two_shards):
    shard = two_shards / "val-000000.tar"
    loose = cli_run(*cli("predict", *small_photos[:3], "--format", "jsonl", "--weights", weights_file))
    result = cli_run(*cli("predict", shard, "--format", "jsonl", "--weights", weights_file))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    records = jsonl(result.stdout)
    assert [r["path"] for r in records] == member_paths(two_shards)[:3]
    assert_records_match(as_loose(records, small_photos), jsonl(loose.stdout))


def test_brace_form_glob_and_stdin_name_the_same_members(cli_run, weights_file, two_shards):
    braces = cli_run(*cli("predict", f"{two_shards}/val-{{000000..000001}}.tar", "--format", "jsonl",
                          "--weights", weights_file))
    assert braces.exit_code == 0, braces.stderr
    assert [r["path"] for r in jsonl(braces.stdout)] == member_paths(two_shards)
    # The glob quoted (as the shell passes it) and on stdin: the same members, found the same way.
    items = expand_inputs([f"{two_shards}/*.tar"])
    assert [item.path for item in items] == member_paths(two_shards)
    assert all(isinstance(item, RemoteImage) and item.url.endswith(".tar") for item in items)
    from_stdin = expand_inputs(["-"], io.StringIO(f"{two_shards}/val-{{000000..000001}}.tar\n"))
    assert from_stdin == items


def test_a_glob_or_shard_that_names_nothing_is_an_error_record(tmp_path):
    items = expand_inputs([f"{tmp_path}/none-*.tar", f"{tmp_path}/missing.tar"])
    assert [str(item) for item in items] == [f"{tmp_path}/none-*.tar: no tar shards match this pattern",
                                             f"{tmp_path}/missing.tar: no such file or directory"]


# --- faults in a shard ------------------------------------------------------------------------------

def test_a_tar_cut_short_keeps_the_members_before_it(cli_run, weights_file, small_photos, two_shards, tmp_path):
    data = (two_shards / "val-000000.tar").read_bytes()
    third = [item for item in expand_inputs([str(two_shards / "val-000000.tar")])][2]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:third.start + 100])  # in the third image's data
    result = cli_run(*cli("predict", cut, "--format", "jsonl", "--weights", weights_file))
    assert result.exit_code == 3
    size = third.end - third.start
    assert result.stderr == (f"resclassify: error: {cut}/000002.jpg: cut short: 100 of {size} bytes in the shard\n"
                             "resclassify: warning: 1 of 3 inputs could not be classified\n")
    records = jsonl(result.stdout)
    assert [r["path"] for r in records] == [f"{cut}/{n:06d}.jpg" for n in range(3)]
    assert records[2] == {"path": f"{cut}/000002.jpg", "error": f"cut short: 100 of {size} bytes in the shard"}
    loose = cli_run(*cli("predict", *small_photos[:2], "--format", "jsonl", "--weights", weights_file))
    assert_records_match(as_loose(records[:2], small_photos), jsonl(loose.stdout))


def test_a_damaged_header_or_a_header_cut_short_is_the_shards_error(two_shards, tmp_path):
    data = (two_shards / "val-000000.tar").read_bytes()
    second = expand_inputs([str(two_shards / "val-000000.tar")])[1]
    header = second.start - 512  # the second image's header (ustar: one block before its data)
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(data[:header] + b"x" * 100 + data[header + 100:])
    in_header = tmp_path / "header.tar"
    in_header.write_bytes(data[:header + 200])
    not_a_tar = tmp_path / "photo.tar"
    not_a_tar.write_bytes(b"\xff\xd8" + b"\0" * 2000)
    items = expand_inputs([str(damaged), str(in_header), str(not_a_tar), str(two_shards / "val-000001.tar")])
    assert [str(item) if isinstance(item, InputError) else item.path for item in items] == [
        f"{damaged}/000000.jpg",
        f"{damaged}: damaged tar header at byte {header} (bad checksum); the members after it are not read",
        f"{in_header}/000000.jpg",
        f"{in_header}: cut short at byte {header}: a member's header is incomplete",
        f"{not_a_tar}: not a tar file (bad checksum)",
        *member_paths(two_shards)[3:]]  # the other shards go on


def test_a_member_that_is_not_an_image_fails_and_a_lone_label_is_skipped(cli_run, weights_file, small_photos,
                                                                         tmp_path):
    shard = write_shard(tmp_path / "mixed.tar", [
        ("a.jpg", small_photos[0].read_bytes()), ("b.jpg", b"not an image"), ("c.json", b'{"label": "tabby"}'),
        ("d.npy", b"\x93NUMPY")])
    result = cli_run(*cli("predict", shard, "--format", "jsonl", "--weights", weights_file))
    assert result.exit_code == 3
    assert result.stderr == (
        f"resclassify: warning: {shard}: 1 member neither an image nor a label (.cls, .txt, .json), not used: "
        "d.npy\n"
        f"resclassify: warning: {shard}: 1 label member with no image, not used: c.json\n"
        f"resclassify: error: {shard}/b.jpg: cannot identify image file\n"
        "resclassify: warning: 1 of 2 inputs could not be classified\n")
    assert [r["path"] for r in jsonl(result.stdout)] == [f"{shard}/a.jpg", f"{shard}/b.jpg"]


# --- resume and shards over members -----------------------------------------------------------------

def test_resume_over_tar_members_continues_the_file(cli_run, weights_file, two_shards, tmp_path):
    argument = f"{two_shards}/val-{{000000..000001}}.tar"
    whole = tmp_path / "whole.jsonl"
    assert cli_run(*cli("predict", argument, "--output", whole, "--weights", weights_file)).exit_code == 0
    lines = whole.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:2]) + lines[2][:40])  # killed while writing the third record
    result = cli_run(*cli("predict", argument, "--output", cut, "--resume", "--weights", weights_file))
    assert result.exit_code == 0, result.stderr
    records = jsonl(cut)
    assert cut.read_text().startswith("".join(lines[:2]))
    assert [r["path"] for r in records] == member_paths(two_shards)
    assert_records_match(records, jsonl(whole))


def test_shards_split_whole_tar_shards_and_each_task_indexes_only_its_own(cli_run, weights_file, two_shards,
                                                                          monkeypatch):
    from resclassify.sources import tars

    indexed = []
    real_index_shards = tars.index_shards

    def index_shards(names, *args, **kwargs):
        indexed.append([str(name) for name in names])
        return real_index_shards(names, *args, **kwargs)

    monkeypatch.setattr(tars, "index_shards", index_shards)
    argument = f"{two_shards}/*.tar"
    parts = [cli_run(*cli("predict", argument, "--shard", f"{k}/3", "--format", "jsonl", "--weights", weights_file))
             for k in (1, 2, 3)]
    assert [part.exit_code for part in parts] == [0, 0, 0]
    # Three tasks, two shards: the first task has none (an empty run, not an error), the others one shard each.
    assert [[r["path"] for r in jsonl(part.stdout)] for part in parts] == \
        [[], member_paths(two_shards)[:3], member_paths(two_shards)[3:]]
    assert indexed == [[], [f"{two_shards}/val-000000.tar"], [f"{two_shards}/val-000001.tar"]]


def test_eval_shards_over_tar_shards_merge_into_the_whole_run(cli_run, weights_file, predicted_images, folder_report,
                                                              tmp_path):
    argument = labelled_shards(tmp_path / "shards", predicted_images, "cls")
    outs = [tmp_path / f"part-{k}.jsonl" for k in (1, 2, 3)]
    for k, out in enumerate(outs, start=1):
        part = cli_run(*cli("eval", argument, "--shard", f"{k}/3", "--json", "--predictions-out", out,
                            "--weights", weights_file))
        assert part.exit_code == 0, part.stderr
    assert [len(jsonl(out)) for out in outs] == [0, 3, 3]
    merged = cli_run("eval", "--from-predictions", *outs, "--json")
    assert merged.exit_code == 0, merged.stderr
    report = json.loads(merged.stdout)
    for key in FIGURES:
        assert report[key] == folder_report[key], key


# --- eval over tar shards ---------------------------------------------------------------------------

def labelled_shards(folder, predicted_images, sibling):
    """The six planned images in two shards, each with its class in a sibling of kind sibling (or none)."""
    labels = planned_labels(predicted_images)
    value = {"cls": lambda label: str(label),
             "txt": lambda label: CLASSES.wnids[label],
             "json": lambda label: json.dumps({"caption": "a photo", "label": CLASSES.labels[label]}),
             None: None}[sibling]
    for shard in range(2):
        members = []
        for n in range(3 * shard, 3 * shard + 3):
            path, _ = predicted_images[n]
            members.append((f"{n:06d}.jpg", path.read_bytes()))
            if value is not None:
                members.append((f"{n:06d}.{sibling}", value(labels[n]).encode()))
        write_shard(folder / f"val-{shard:06d}.tar", members)
    return f"{folder}/val-{{000000..000001}}.tar"


FIGURES = ("accuracy", "per_class", "worst_classes", "confusions", "failed")


@pytest.fixture(scope="module")
def folder_report(tmp_path_factory, six_eval_folder, weights_file):
    """eval over the same six images in class folders: what every tar layout must report."""
    from click.testing import CliRunner
    from resclassify.cli import cli as command

    result = CliRunner().invoke(command, [str(a) for a in cli("eval", six_eval_folder, "--json",
                                                              "--weights", weights_file)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("sibling", ["cls", "txt", "json"])
def test_eval_over_tars_reports_what_class_folders_do(cli_run, weights_file, predicted_images, folder_report,
                                                      tmp_path, sibling):
    argument = labelled_shards(tmp_path / "shards", predicted_images, sibling)
    result = cli_run(*cli("eval", argument, "--json", "--weights", weights_file))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    for key in FIGURES:
        assert report[key] == folder_report[key], key
    assert report["images"] == folder_report["images"]
    assert report["accuracy"]["top1"]["correct"] == 2 and report["accuracy"]["top5"]["correct"] == 3
    assert report["ground_truth"]["layout"] == f"tar shards (.{sibling})"
    assert report["folder"] == argument


def test_eval_over_tars_with_a_labels_file(cli_run, weights_file, predicted_images, folder_report, tmp_path):
    argument = labelled_shards(tmp_path / "shards", predicted_images, None)
    labels = planned_labels(predicted_images)
    labels_file = tmp_path / "labels.csv"
    # By key, by member name, and by shard/member: each names one member.
    names = ["000000", "000001.jpg", "val-000000.tar/000002.jpg", "000003", "000004.jpg", "000005"]
    labels_file.write_text("filename,label\n" + "".join(f"{name},{CLASSES.wnids[label]}\n"
                                                       for name, label in zip(names, labels)))
    result = cli_run(*cli("eval", argument, "--labels", labels_file, "--json", "--weights", weights_file))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    for key in FIGURES:
        assert report[key] == folder_report[key], key
    assert report["ground_truth"]["layout"] == "tar shards, labels file (CSV)"


def test_eval_skips_members_without_a_label_and_names_them(predicted_images, tmp_path):
    shard = write_shard(tmp_path / "s.tar", [
        ("a.jpg", b"x"), ("a.cls", b"7"), ("b.jpg", b"x"), ("c.jpg", b"x"), ("c.json", b'{"caption": "no class"}'),
        ("d.jpg", b"x"), ("d.txt", b"tabby")])
    truth = find_ground_truth(str(shard))
    assert [(image.path, image.true_index) for image in truth.images] == [
        (f"{shard}/a.jpg", 7), (f"{shard}/d.jpg", CLASSES.indices_of_label["tabby"][0])]
    assert [(s.path, s.reason) for s in truth.skipped] == [
        (f"{shard}/b.jpg", "no .cls, .txt or .json sibling"),
        (f"{shard}/c.jpg", "its .json sibling has no class (label, class, cls, wnid, class_name, class_index, "
                           "class_id, synset, target, category)")]
    assert truth.layout == "tar shards (.cls and .txt)" and truth.found == 4
    assert truth.images[0].item == RemoteImage(f"{shard}/a.jpg", str(shard), 512, 513)


@pytest.mark.parametrize("sibling, data, message", [
    ("cls", b"1000", "'1000' is not a class index 0..999"),
    ("txt", b"tabbby", '"tabbby" is not'),
    ("json", b"{", "not JSON")])
def test_a_label_that_names_no_class_is_a_dataset_error(tmp_path, sibling, data, message):
    shard = write_shard(tmp_path / "s.tar", [("a.jpg", b"x"), (f"a.{sibling}", data)])
    with pytest.raises(DatasetError, match=f"^{shard}/a.{sibling}: " + message.replace(".", r"\.")):
        find_ground_truth(str(shard))


# --- tar shards in a bucket -------------------------------------------------------------------------

def test_tar_shards_in_a_bucket_equal_local(cli_run, weights_file, s3, predicted_images, folder_report, tmp_path):
    local = tmp_path / "shards"
    argument = labelled_shards(local, predicted_images, "cls")
    bucket = s3.new_bucket()
    s3.upload_folder(local, bucket, "shards/")
    remote = f"s3://{bucket}/shards/val-{{000000..000001}}.tar"

    result = cli_run(*cli("eval", remote, "--json", "--weights", weights_file))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    for key in FIGURES:
        assert report[key] == folder_report[key], key
    assert report["ground_truth"]["layout"] == "tar shards (.cls)"

    glob = cli_run(*cli("predict", f"s3://{bucket}/shards/*.tar", "--format", "jsonl", "--weights", weights_file))
    here = cli_run(*cli("predict", argument, "--format", "jsonl", "--weights", weights_file))
    assert glob.exit_code == 0, glob.stderr
    records = jsonl(glob.stdout)
    assert [r["path"] for r in records] == [f"s3://{bucket}/shards/val-{n // 3:06d}.tar/{n:06d}.jpg"
                                            for n in range(6)]
    assert_records_match([{**r, "path": r["path"].replace(f"s3://{bucket}/shards", str(local))} for r in records],
                         jsonl(here.stdout))


def test_a_shard_missing_from_the_bucket_is_its_error_and_a_cut_one_keeps_its_first_members(s3, two_shards):
    bucket = s3.new_bucket()
    data = (two_shards / "val-000000.tar").read_bytes()
    third = expand_inputs([str(two_shards / "val-000000.tar")])[2]
    s3.client.put_object(Bucket=bucket, Key="cut.tar", Body=data[:third.start + 100])
    items = expand_inputs([f"s3://{bucket}/{{missing,cut}}.tar"])
    assert str(items[0]).startswith(f"s3://{bucket}/missing.tar: ")
    assert [item.path for item in items[1:]] == [f"s3://{bucket}/cut.tar/{n:06d}.jpg" for n in range(3)]
    assert isinstance(items[1], RemoteImage) and isinstance(items[2], RemoteImage)
    assert str(items[3]) == f"s3://{bucket}/cut.tar/000002.jpg: cut short: 100 of {third.end - third.start} bytes " \
                            "in the shard"


def test_eval_over_a_cut_tar_fails_the_cut_member_with_its_true_class(cli_run, weights_file, two_shards, tmp_path):
    data = (two_shards / "val-000000.tar").read_bytes()
    third = expand_inputs([str(two_shards / "val-000000.tar")])[2]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:third.start + 100])  # its .cls sibling came before it and is whole
    out = tmp_path / "records.jsonl"
    result = cli_run(*cli("eval", cut, "--json", "--predictions-out", out, "--weights", weights_file))
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["images"]["evaluated"] == 2 and report["images"]["failed"] == 1
    assert jsonl(out)[-1] == {"path": f"{cut}/000002.jpg", "true": {"index": 2, "wnid": CLASSES.wnids[2],
                                                                     "label": CLASSES.labels[2]},
                              "error": f"cut short: 100 of {third.end - third.start} bytes in the shard"}


def test_a_labels_file_names_members_of_shards_in_a_bucket(s3, tmp_path):
    bucket = s3.new_bucket()
    for shard, key in [("val-000000.tar", "000001"), ("val-000001.tar", "000001")]:  # one key in both shards
        write_shard(tmp_path / shard, [(f"{key}.jpg", b"x"), (f"{key}.cls", b"3")])
    s3.upload_folder(tmp_path, bucket, "shards/")
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("filename,label\nval-000001.tar/000001.jpg,tabby\n000001,n01440764\n")
    truth = find_ground_truth(f"s3://{bucket}/shards/val-{{000000..000001}}.tar", labels_file)
    # The key alone fits both members, so it fits none; shard/member names one.
    assert [(image.path, image.true_index) for image in truth.images] == [
        (f"s3://{bucket}/shards/val-000001.tar/000001.jpg", CLASSES.indices_of_label["tabby"][0])]
    assert truth.images[0].item == RemoteImage(truth.images[0].path, f"s3://{bucket}/shards/val-000001.tar", 512, 513)
    assert [s.path for s in truth.skipped] == [f"s3://{bucket}/shards/val-000000.tar/000001.jpg"]
    assert truth.labels_without_image == {str(labels_file): ["000001"]}


def test_a_tar_shard_behind_a_plain_http_server_equals_local(cli_run, weights_file, http_server, two_shards):
    # Python's http.server ignores Range and answers with the whole file: each member is still its own bytes.
    for shard in two_shards.iterdir():
        (http_server.folder / shard.name).write_bytes(shard.read_bytes())
    remote = cli_run(*cli("predict", http_server.url("val-{000000..000001}.tar"), "--format", "jsonl",
                          "--weights", weights_file))
    here = cli_run(*cli("predict", two_shards / "val-{000000..000001}.tar", "--format", "jsonl", "--weights",
                        weights_file))
    assert remote.exit_code == 0, remote.stderr
    records = jsonl(remote.stdout)
    assert [r["path"] for r in records] == [http_server.url(f"val-{n // 3:06d}.tar/{n:06d}.jpg") for n in range(5)]
    assert_records_match([{**r, "path": r["path"].replace(http_server.base.rstrip("/"), str(two_shards))}
                          for r in records], jsonl(here.stdout))


def test_eval_with_a_shard_missing_or_damaged_reports_the_rest_and_exits_3_unless_allowed(
        cli_run, weights_file, predicted_images, tmp_path):
    # The images of a shard that cannot be read are unknown: the report leaves them out, so the run cannot say
    # it saw everything (exit 3), unless --max-failures allows the shards as it allows unreadable images.
    folder = tmp_path / "shards"
    labelled_shards(folder, predicted_images, "cls")
    damaged = bytearray((folder / "val-000001.tar").read_bytes())
    damaged[148:156] = b"0000000\0"  # the first header's checksum
    (folder / "val-000001.tar").write_bytes(bytes(damaged))
    argument = f"{folder}/val-{{000000..000002}}.tar"  # 000002 does not exist

    result = cli_run(*cli("eval", argument, "--json", "--weights", weights_file))
    assert result.exit_code == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["images"]["evaluated"] == 3 and report["images"]["failed"] == 0
    warnings = result.stderr.splitlines()
    assert warnings[-1] == "resclassify: warning: 2 tar shards could not be read; their images are not in the figures"
    assert any(line.startswith(f"resclassify: warning: {folder}/val-000002.tar: ") for line in warnings), warnings
    assert any(line.startswith(f"resclassify: warning: {folder}/val-000001.tar") for line in warnings), warnings

    allowed = cli_run(*cli("eval", argument, "--json", "--max-failures", "2", "--weights", weights_file))
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stderr.splitlines()[-1] == ("resclassify: warning: 2 tar shards could not be read; their images "
                                               "are not in the figures (within --max-failures 2)")
    assert cli_run(*cli("eval", argument, "--json", "--max-failures", "1", "--weights", weights_file)).exit_code == 3


def test_the_report_shows_members_of_local_shards_as_thumbnails(cli_run, weights_file, predicted_images, tmp_path):
    argument = labelled_shards(tmp_path / "shards", predicted_images, "cls")
    page = tmp_path / "report.html"
    result = cli_run(*cli("eval", argument, "--report", page, "--weights", weights_file))
    assert result.exit_code == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    # Four of the six planned images are top-1 mistakes: each has a thumbnail, and none a link to a file
    # that does not exist (a member has no file of its own).
    assert text.count('src="data:image/jpeg;base64,') >= 4
    assert "no preview" not in text
    assert ".tar/" in text and 'href="shards/val-000000.tar/' not in text and "href=\"" + str(tmp_path) not in text
