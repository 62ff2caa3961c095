"""Class names: the ImageNet class index shipped in the package, looked up by index, WordNet id or label."""

import csv
import functools
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class ClassIndex:
    """Class names in the order of the network's outputs."""

    labels: tuple
    wnids: tuple = ()

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

    def wnid(self, index):
        return self.wnids[index] if self.wnids else None


def _read_package_tsv(name):
    text = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


@functools.cache
def imagenet_classes():
    """The 1000 ImageNet classes in Keras's output order (sorted WordNet ids)."""
    rows = _read_package_tsv("imagenet_class_index.tsv")
    if [int(row["index"]) for row in rows] != list(range(1000)):
        raise RuntimeError("the packaged ImageNet class index is damaged")
    return ClassIndex(labels=tuple(r["label"] for r in rows), wnids=tuple(r["wnid"] for r in rows))


@functools.cache
def ilsvrc2012_id_to_wnid():
    """The ILSVRC2012 devkit's class IDs (1..1000, not in WordNet-id order) to WordNet ids."""
    return {int(r["ilsvrc2012_id"]): r["wnid"] for r in _read_package_tsv("ilsvrc2012_id_to_wnid.tsv")}
