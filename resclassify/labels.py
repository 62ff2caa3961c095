"""Class names: the ImageNet class index shipped in the package or a user's classes file; lookups by index, WordNet id, label."""

import csv
import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ModelError

IMAGENET = "ImageNet"

# Header names accepted for the label column of a TSV/CSV classes file, in order of preference.
LABEL_COLUMNS = ("label", "class", "name")


@dataclass(frozen=True)
class ClassIndex:
    """Class names in the order of the network's outputs.

    source says where the names come from, for messages: "ImageNet", a classes file's name, or
    the model's name when its outputs are named by index.
    """

    labels: tuple
    wnids: tuple = ()
    source: str | None = field(default=None, compare=False)

    def __len__(self):
        return len(self.labels)

    @functools.cached_property
    def index_of_wnid(self):
        return {wnid: i for i, wnid in enumerate(self.wnids)}

    @functools.cached_property
    def indices_of_label(self):
        """label -> every index that bears it (ImageNet has two cranes and two maillots)."""
        found = {}
        for i, label in enumerate(self.labels):
            found.setdefault(label, []).append(i)
        return found

    def describe(self, count=1):
        """How messages name these classes: "an ImageNet class", "2 classes of flowers.txt"."""
        if self.source == IMAGENET:
            return "an ImageNet class" if count == 1 else f"{count} ImageNet classes"
        of = f" of {self.source}" if self.source else ""
        return f"a class{of}" if count == 1 else f"{count} classes{of}"

    def name_forms(self):
        """The ways a folder or a labels file may name one of these classes, for messages."""
        forms = ["a WordNet id"] if self.wnids else []
        forms.append("a Keras label" if self.source == IMAGENET else "a label")
        return ", ".join(forms) + f" or an index 0..{len(self) - 1}"

    def wnid(self, index):
        """The WordNet id of an output, or None for classes that have none (a user's own)."""
        return (self.wnids[index] or None) if self.wnids else None


def _read_package_tsv(name):
    text = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


@functools.cache
def imagenet_classes():
    """The 1000 ImageNet classes in Keras's output order (sorted WordNet ids)."""
    rows = _read_package_tsv("imagenet_class_index.tsv")
    if [int(row["index"]) for row in rows] != list(range(1000)):
        raise RuntimeError("the packaged ImageNet class index is damaged")
    return ClassIndex(labels=tuple(r["label"] for r in rows), wnids=tuple(r["wnid"] for r in rows),
                      source=IMAGENET)


@functools.cache
def ilsvrc2012_id_to_wnid():
    """The ILSVRC2012 devkit's class IDs (1..1000, not in WordNet-id order) to WordNet ids."""
    return {int(r["ilsvrc2012_id"]): r["wnid"] for r in _read_package_tsv("ilsvrc2012_id_to_wnid.tsv")}


def read_class_file(path):
    """A user's class names, in output order: one label per line, or a TSV/CSV with a header.

    A table needs a label column (label, class or name); an index column, if there is one,
    gives each row's output (0..n-1, any order); a wnid column, if there is one, is kept.
    A .csv file is comma-separated; a .tsv file, or any file whose first line has a tab, is
    tab-separated; anything else is one label per line (so labels may hold commas).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelError(f"classes file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"classes file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"classes file {path} is empty")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_class_table(path, lines, ",")
    if suffix == ".tsv" or "\t" in lines[0]:
        return _read_class_table(path, lines, "\t")
    labels = [line.strip() for line in lines]
    for number, label in enumerate(labels, start=1):
        if not label:
            raise ModelError(f"classes file {path}, line {number}: empty label")
    return ClassIndex(labels=tuple(labels), source=path.name)


def _read_class_table(path, lines, delimiter):
    reader = csv.DictReader(lines, delimiter=delimiter)
    columns = {name.strip().lower(): name for name in reader.fieldnames or () if name}
    label_column = next((columns[c] for c in LABEL_COLUMNS if c in columns), None)
    if label_column is None:
        raise ModelError(
            f"classes file {path}: no label column in its header ({', '.join(columns.values()) or 'empty'}); "
            f"name it one of {', '.join(LABEL_COLUMNS)}"
        )
    rows = list(reader)
    labels, wnids, indices = [], [], []
    for number, row in enumerate(rows, start=2):
        label = (row.get(label_column) or "").strip()
        if not label:
            raise ModelError(f"classes file {path}, line {number}: empty label")
        labels.append(label)
        wnids.append((row.get(columns.get("wnid", ""), "") or "").strip())
        if "index" in columns:
            try:
                indices.append(int(row[columns["index"]]))
            except (TypeError, ValueError):
                raise ModelError(f"classes file {path}, line {number}: index {row[columns['index']]!r} "
                                 "is not a whole number") from None
    if indices:
        if sorted(indices) != list(range(len(rows))):
            raise ModelError(f"classes file {path}: the index column must number the rows 0 to {len(rows) - 1}, "
                             "each once")
        order = sorted(range(len(rows)), key=indices.__getitem__)
        labels = [labels[i] for i in order]
        wnids = [wnids[i] for i in order]
    return ClassIndex(labels=tuple(labels), wnids=tuple(wnids) if any(wnids) else (), source=path.name)
