"""Class names: the shipped ImageNet index and users' classes files."""

import pytest

from resclassify.errors import ModelError
from resclassify.labels import ClassIndex, imagenet_classes, read_class_file


def test_imagenet_classes():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert (classes.labels[281], classes.wnid(281)) == ("tabby", "n02123045")


def test_classes_without_wnids():
    classes = ClassIndex(labels=("cat", "dog"))
    assert classes.wnid(1) is None
    assert classes.indices_of_label == {"cat": [0], "dog": [1]}


def test_one_label_per_line_keeps_commas_and_skips_trailing_blank_lines(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\ufefftench, Tinca tinca\r\ngolden retriever\n\n\n")
    assert read_class_file(path) == ClassIndex(labels=("tench, Tinca tinca", "golden retriever"))


def test_the_shipped_imagenet_table_reads_as_a_classes_file():
    from importlib import resources

    with resources.as_file(resources.files("resclassify").joinpath("data", "imagenet_class_index.tsv")) as path:
        assert read_class_file(path) == imagenet_classes()


def test_index_column_orders_rows(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("index,label\n1,dog\n0,cat\n")
    assert read_class_file(path).labels == ("cat", "dog")


@pytest.mark.parametrize("name, text, message", [
    ("c.txt", "", "is empty"),
    ("c.txt", "cat\n\ndog\n", "line 2: empty label"),
    ("c.csv", "id,colour\n0,red\n", "no label column in its header (id, colour); name it one of label, class, name"),
    ("c.csv", "index,label\n0,cat\n0,dog\n", "the index column must number the rows 0 to 1, each once"),
    ("c.tsv", "index\tlabel\nx\tcat\n", "line 2: index 'x' is not a whole number"),
])
def test_bad_classes_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_class_file(path)
