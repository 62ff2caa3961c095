import json

import pytest

from resclassify.sources.ground_truth import DEVKIT_IMAGE_NAME, ClassNameError, resolve_class_name
from resclassify.sources.inputs import find_ground_truth
from resclassify.errors import DatasetError
from resclassify.labels import ilsvrc2012_id_to_wnid, imagenet_classes, read_class_file

CLASSES = imagenet_classes()


def touch(path):
    """Discovery reads names, never pixels: an empty file with an image extension will do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truth_pairs(truth, root):
    return [(str(p.relative_to(root)), i) for p, i in ((type(root)(image.path), image.true_index)
                                                          for image in truth.images)]


def test_class_folders_by_wnid_label_and_index(tmp_path):
    touch(tmp_path / "n02123045" / "a.jpg")
    touch(tmp_path / "tiger_cat" / "b.JPEG")
    touch(tmp_path / "7" / "c.png")
    truth = find_ground_truth(tmp_path)
    assert truth_pairs(truth, tmp_path) == [("7/c.png", 7), ("n02123045/a.jpg", 281), ("tiger_cat/b.JPEG", 282)]
    assert truth.layout == "class folders named by WordNet ids, Keras labels and class indices"
    assert truth.found == 3 and truth.skipped == [] and truth.labels_without_image == {}


def test_class_folders_are_searched_recursively_and_hidden_entries_skipped(tmp_path):
    touch(tmp_path / "tabby" / "day1" / "a.jpg")
    touch(tmp_path / "tabby" / ".thumbs" / "b.jpg")
    touch(tmp_path / "tabby" / ".c.jpg")
    touch(tmp_path / "tabby" / "notes.txt")
    touch(tmp_path / ".cache" / "d.jpg")
    touch(tmp_path / "loose.jpg")
    truth = find_ground_truth(tmp_path)
    assert truth_pairs(truth, tmp_path) == [("tabby/day1/a.jpg", 281)]
    assert [(s.path, s.reason) for s in truth.skipped] == [(str(tmp_path / "loose.jpg"), "not in a class folder")]


def test_imagenetv2_integer_folders_are_read_as_integers(tmp_path):
    # Sorted as strings, the folders go 0, 1, 10, 2, ...: numbering them in that order would
    # give folder "10" class 2. Each folder's number is its class.
    for index in range(11):
        touch(tmp_path / str(index) / f"img{index}.jpeg")
    truth = find_ground_truth(tmp_path)
    assert sorted(truth_pairs(truth, tmp_path), key=lambda pair: pair[1]) == [
        (f"{i}/img{i}.jpeg", i) for i in range(11)]
    assert truth.layout == "class folders named by class indices"


def test_labels_ignore_case_and_spaces_only_when_exact_match_fails():
    assert resolve_class_name("Egyptian_cat", CLASSES) == (285, "label")
    assert resolve_class_name("egyptian cat", CLASSES) == (285, "label")
    # "Cardigan" (the corgi) and "cardigan" (the jacket) differ only by case: exact wins.
    assert resolve_class_name("Cardigan", CLASSES) == (264, "label")
    assert resolve_class_name("cardigan", CLASSES) == (474, "label")


@pytest.mark.parametrize("name, message", [
    ("crane", '"crane" names 2 ImageNet classes, n02012849 (index 134, crane) and n03126707 (index 517, crane); '
              "use the WordNet id instead"),
    ("maillot", '"maillot" names 2 ImageNet classes, n03710637 (index 638, maillot) and n03710721 (index 639, '
                "maillot); use the WordNet id instead"),
])
def test_ambiguous_class_folder_names_the_wnids(tmp_path, name, message):
    touch(tmp_path / name / "a.jpg")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(tmp_path)
    assert str(caught.value) == f"{tmp_path / name}: {message}"


def test_unknown_class_folder_names_nearest_labels(tmp_path):
    touch(tmp_path / "tabby" / "a.jpg")
    touch(tmp_path / "golden_retriver" / "b.jpg")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(tmp_path)
    assert str(caught.value) == (
        f'{tmp_path / "golden_retriver"}: "golden_retriver" is not an ImageNet class (a WordNet id, a Keras label '
        f"or an index 0..999); nearest labels: golden_retriever, flat-coated_retriever, Labrador_retriever")


@pytest.mark.parametrize("name", ["1000", "n99999999", "zzzzqqq"])
def test_folder_out_of_range_or_far_from_any_label(tmp_path, name):
    touch(tmp_path / name / "a.jpg")
    with pytest.raises(DatasetError, match=r"is not an ImageNet class .*; (no label is close|nearest labels: )"):
        find_ground_truth(tmp_path)


def flowers(tmp_path, text="rose\ntulip\ndaisy\n"):
    (tmp_path / "flowers.txt").write_text(text)
    return read_class_file(tmp_path / "flowers.txt")


def test_a_users_classes_are_named_in_class_errors(tmp_path):
    classes = flowers(tmp_path)
    touch(tmp_path / "data" / "tulip" / "a.jpg")
    touch(tmp_path / "data" / "tulpi" / "b.jpg")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(tmp_path / "data", classes=classes)
    assert str(caught.value) == (f'{tmp_path / "data" / "tulpi"}: "tulpi" is not a class of flowers.txt '
                                 f"(a label or an index 0..2); nearest labels: tulip")
    # ImageNet's names mean nothing here: a WordNet id is no class of flowers.txt.
    assert resolve_class_name("2", classes) == (2, "index")
    with pytest.raises(ClassNameError) as caught:
        resolve_class_name("n02123045", classes)
    assert str(caught.value) == '"n02123045" is not a class of flowers.txt (a label or an index 0..2); no label is close'


def test_a_label_twice_in_a_users_classes_says_to_use_the_index(tmp_path):
    classes = flowers(tmp_path, "rose\ntulip\nrose\n")
    with pytest.raises(ClassNameError) as caught:
        resolve_class_name("rose", classes)
    assert str(caught.value) == '"rose" names 2 classes of flowers.txt, index 0 and index 2; use the index instead'
    with_wnids = flowers(tmp_path, "index\twnid\tlabel\n0\tn1\trose\n1\tn2\ttulip\n2\tn3\trose\n")
    with pytest.raises(ClassNameError) as caught:
        resolve_class_name("rose", with_wnids)
    assert str(caught.value) == ('"rose" names 2 classes of flowers.txt, n1 (index 0, rose) and n3 (index 2, rose); '
                                 "use the WordNet id instead")
    with pytest.raises(ClassNameError) as caught:
        resolve_class_name("lily", with_wnids)
    assert str(caught.value) == '"lily" is not a class of flowers.txt (a WordNet id, a label or an index 0..2); ' \
                                "no label is close"


def test_devkit_labels_with_a_users_classes_are_an_error_not_a_crash(tmp_path):
    folder = flat(tmp_path, [DEVKIT_IMAGE_NAME.format(1) + ".JPEG"])
    labels = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    labels.write_text("490\n")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(folder, labels, classes=flowers(tmp_path))
    assert str(caught.value) == f"{labels}: line 1: ILSVRC2012 class ID 490 is n01751748, which is not a class of " \
                                "flowers.txt"


def test_flat_folder_without_labels_is_an_error(tmp_path):
    touch(tmp_path / "a.jpg")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: no class folders in it, and no --labels FILE")


def flat(tmp_path, names):
    folder = tmp_path / "images"
    for name in names:
        touch(folder / name)
    return folder


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_csv_and_tsv_with_header_labels_by_wnid_label_or_index(tmp_path, delimiter):
    folder = flat(tmp_path, ["a.jpg", "b.png", "c.jpeg"])
    labels = tmp_path / "labels.txt"
    labels.write_text(delimiter.join(["filename", "label"]) + "\n"
                      + "\n".join(delimiter.join(row) for row in [("a.jpg", "n02123045"), ("b", "tiger_cat"),
                                                                    ("c", "285")]) + "\n")
    truth = find_ground_truth(folder, labels)
    assert truth_pairs(truth, folder) == [("a.jpg", 281), ("b.png", 282), ("c.jpeg", 285)]
    assert truth.layout == f"labels file ({'TSV' if delimiter == chr(9) else 'CSV'})"


def test_csv_columns_found_by_name_in_any_order(tmp_path):
    folder = flat(tmp_path, ["a.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("wnid,notes,image\nn02123045,fluffy,a.jpg\n")
    assert truth_pairs(find_ground_truth(folder, labels), folder) == [("a.jpg", 281)]


def test_csv_without_header_is_an_error(tmp_path):
    folder = flat(tmp_path, ["a.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("a.jpg,tabby\n")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(folder, labels)
    assert str(caught.value) == (f"{labels}: line 1: the first line must be a header naming the file and "
                                 f"label columns (e.g. filename,label)")


def test_csv_with_an_unknown_label_names_the_line(tmp_path):
    folder = flat(tmp_path, ["a.jpg", "b.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\na.jpg,tabby\nb.jpg,crane\n")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(folder, labels)
    assert str(caught.value).startswith(f'{labels}: line 3: "crane" names 2 ImageNet classes, n02012849')


def test_label_file_naming_missing_images_and_images_without_labels(tmp_path):
    folder = flat(tmp_path, ["a.jpg", "b.jpg", "stray.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\na.jpg,tabby\nb.jpg,tabby\ngone1.jpg,tabby\ngone2,tiger_cat\n")
    truth = find_ground_truth(folder, labels)
    assert truth_pairs(truth, folder) == [("a.jpg", 281), ("b.jpg", 281)]
    assert [(s.path, s.reason) for s in truth.skipped] == [(str(folder / "stray.jpg"), "no label in the labels file")]
    assert truth.labels_without_image == {str(labels): ["gone1.jpg", "gone2"]}
    assert truth.found == 3


def test_an_image_labelled_twice_with_different_classes_is_an_error(tmp_path):
    folder = flat(tmp_path, ["a.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\na.jpg,tabby\na,tiger_cat\n")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(folder, labels)
    assert str(caught.value) == (f"{labels}: line 3: a is labelled again with a different class (tiger_cat; "
                                 f"line 2 says tabby)")


def test_kaggle_loc_val_solution(tmp_path):
    folder = flat(tmp_path, ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"])
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text("ImageId,PredictionString\n"
                      "ILSVRC2012_val_00000002,n02123045 10 20 30 40 n02123045 5 6 7 8 \n"
                      "ILSVRC2012_val_00000001,n01751748 16 46 500 352 \n")
    truth = find_ground_truth(folder, labels)
    assert truth_pairs(truth, folder) == [("ILSVRC2012_val_00000001.JPEG", 65), ("ILSVRC2012_val_00000002.JPEG", 281)]
    assert truth.layout == "labels file (Kaggle LOC_val_solution.csv)"


@pytest.mark.parametrize("ilsvrc_id, wnid, keras_index, label", [
    (490, "n01751748", 65, "sea_snake"),
    (1, "n02119789", 278, "kit_fox"),
    (2, "n02100735", 212, "English_setter"),
])
def test_devkit_ids_map_through_the_shipped_table(ilsvrc_id, wnid, keras_index, label):
    assert ilsvrc2012_id_to_wnid()[ilsvrc_id] == wnid
    assert CLASSES.index_of_wnid[wnid] == keras_index
    assert CLASSES.labels[keras_index] == label


def test_devkit_table_is_a_bijection_onto_keras_classes():
    table = ilsvrc2012_id_to_wnid()
    assert sorted(table) == list(range(1, 1001))
    assert sorted(table.values()) == list(CLASSES.wnids)


# The devkit's ILSVRC2012_validation_ground_truth.txt starts with these ten IDs, and the
# widely used Caffe val.txt gives the same ten images these Keras (sorted-wnid) indices.
DEVKIT_FIRST_IDS = [490, 361, 171, 822, 297, 482, 13, 704, 599, 164]
CAFFE_FIRST_INDICES = [65, 970, 230, 809, 516, 57, 334, 415, 674, 332]


def test_devkit_ground_truth_file(tmp_path):
    present = [1, 2, 3, 4, 5, 6, 7, 9, 10]  # image 8 is missing from the folder
    folder = flat(tmp_path, [DEVKIT_IMAGE_NAME.format(n) + ".JPEG" for n in present])
    labels = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    labels.write_text("".join(f"{i}\n" for i in DEVKIT_FIRST_IDS))
    truth = find_ground_truth(folder, labels)
    assert [image.true_index for image in truth.images] == [CAFFE_FIRST_INDICES[n - 1] for n in present]
    assert truth.labels_without_image == {str(labels): ["ILSVRC2012_val_00000008"]}
    assert truth.layout == "labels file (ILSVRC2012 devkit validation ground truth)"


def test_devkit_id_out_of_range(tmp_path):
    folder = flat(tmp_path, ["ILSVRC2012_val_00000001.JPEG"])
    labels = tmp_path / "gt.txt"
    labels.write_text("490\n1001\n")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(folder, labels)
    assert str(caught.value) == f"{labels}: line 2: 1001 is not an ILSVRC2012 class ID (1..1000)"


def write_real(tmp_path, entries):
    path = tmp_path / "real.json"
    path.write_text(json.dumps(entries))
    return path


def test_real_labels_by_validation_image_number(tmp_path):
    names = [DEVKIT_IMAGE_NAME.format(n) + ".JPEG" for n in (1, 3, 4)]
    folder = flat(tmp_path, names)
    labels = tmp_path / "gt.txt"
    labels.write_text("490\n361\n171\n822\n")
    real = write_real(tmp_path, [[65], [230, 231], [], [1, 2, 3]])
    truth = find_ground_truth(folder, labels, real)
    assert [(image.path, image.real_labels) for image in truth.images] == [
        (str(folder / names[0]), (65,)), (str(folder / names[2]), (1, 2, 3))]
    assert [image.accepted for image in truth.images] == [{65}, {1, 2, 3}]
    # The original label stays, for per-class figures.
    assert truth.images[0].true_index == 65
    assert [(s.path, s.reason) for s in truth.skipped] == [
        (str(folder / names[1]), "no ReaL label (excluded by ReaL)")]
    assert truth.labels_without_image[str(real)] == ["ILSVRC2012_val_00000002"]
    assert truth.layout.endswith(", hits counted against ReaL labels")


def test_real_labels_in_file_name_order_for_other_names(tmp_path):
    touch(tmp_path / "data" / "tabby" / "b.jpg")
    touch(tmp_path / "data" / "tiger_cat" / "a.jpg")
    real = write_real(tmp_path, [[282, 281], [5]])
    truth = find_ground_truth(tmp_path / "data", real_labels_file=real)
    # a.jpg comes first by file name although its folder sorts second.
    assert [(image.true_index, image.real_labels) for image in truth.images] == [(281, (5,)), (282, (282, 281))]


def test_real_labels_must_be_lists_of_indices(tmp_path):
    touch(tmp_path / "data" / "tabby" / "a.jpg")
    real = write_real(tmp_path, {"a": 1})
    with pytest.raises(DatasetError, match="expected a JSON list of lists of class indices 0..999"):
        find_ground_truth(tmp_path / "data", real_labels_file=real)


def test_nothing_to_evaluate(tmp_path):
    folder = flat(tmp_path, ["a.jpg"])
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\nb.jpg,tabby\n")
    with pytest.raises(DatasetError) as caught:
        find_ground_truth(folder, labels)
    assert str(caught.value) == (f"{folder}: nothing to evaluate: 1 image files found, none labelled "
                                 f"(first: {folder / 'a.jpg'}: no label in the labels file)")


def test_a_class_folder_linking_back_up_does_not_count_other_classes_as_its_own(tmp_path):
    touch(tmp_path / "tabby" / "a.jpg")
    touch(tmp_path / "tiger_cat" / "b.jpg")
    touch(tmp_path / "Persian_cat" / "c.jpg")
    (tmp_path / "tabby" / "up").symlink_to("..")
    (tmp_path / "tabby" / "cousin").symlink_to("../tiger_cat")
    truth = find_ground_truth(tmp_path)
    assert truth_pairs(truth, tmp_path) == [("Persian_cat/c.jpg", 283), ("tabby/a.jpg", 281), ("tiger_cat/b.jpg", 282)]
    assert truth.found == 3
    assert [(s.path, s.reason) for s in truth.not_followed] == [
        (str(tmp_path / "tabby" / "cousin"), "symbolic link to a folder already searched, not followed"),
        (str(tmp_path / "tabby" / "up"), "symbolic link loop, not followed")]


def test_a_class_folder_that_is_a_link_is_searched(tmp_path):
    touch(tmp_path / "store" / "cats" / "a.jpg")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "n02123045").symlink_to(tmp_path / "store" / "cats")
    truth = find_ground_truth(tmp_path / "val")
    assert truth_pairs(truth, tmp_path / "val") == [("n02123045/a.jpg", 281)]
    assert truth.not_followed == []


def test_a_symbolic_link_loop_at_the_top_is_skipped_and_named(tmp_path):
    touch(tmp_path / "tabby" / "a.jpg")
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "n01440764").symlink_to("n01440764")  # meant to be a class folder
    truth = find_ground_truth(tmp_path)
    assert truth_pairs(truth, tmp_path) == [("tabby/a.jpg", 281)]
    assert [(s.path, s.reason) for s in truth.skipped] == [(str(tmp_path / "loop.jpg"), "symbolic link loop")]
    assert [(s.path, s.reason) for s in truth.not_followed] == [
        (str(tmp_path / "n01440764"), "symbolic link loop, not followed")]


def test_class_folders_naming_one_class_are_merged_with_a_note(tmp_path):
    touch(tmp_path / "n02123045" / "a.jpg")
    touch(tmp_path / "tabby" / "b.jpg")
    touch(tmp_path / "281" / "c.jpg")
    touch(tmp_path / "tiger_cat" / "d.jpg")
    truth = find_ground_truth(tmp_path)
    assert [index for _, index in truth_pairs(truth, tmp_path)] == [281, 281, 281, 282]
    assert truth.merged_class_folders == [
        {"index": 281, "wnid": "n02123045", "label": "tabby", "folders": ["281", "n02123045", "tabby"]}]
