"""Ground truth for eval: which ImageNet class each image belongs to, from class folders, a labels file
(CSV/TSV, Kaggle, the ILSVRC devkit) and ReaL labels; never the model."""

import csv
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from ..images import file_error_reason
from .local import Skipped, _entry_kind, is_image_file, walk_images
from .remote import RemoteImage, filesystem, is_url, list_images, read_file


# How many names a report lists before it says "and N more".
FIRST_FEW = 5


def first_few(names, count=FIRST_FEW):
    """The first count names, then how many more there are: "a, b, c, and 4 more"."""
    more = len(names) - count
    return ", ".join(names[:count]) + (f", and {more} more" if more > 0 else "")

# Column names a CSV or TSV labels file may use, lower-cased; the first match wins.
FILE_COLUMNS = ("filename", "file_name", "file", "path", "image", "image_name", "image_id", "imageid",
                "img", "name", "fname")
LABEL_COLUMNS = ("label", "class", "class_name", "wnid", "synset", "class_id", "class_index", "index",
                 "target", "category")

DEVKIT_IMAGE_NAME = "ILSVRC2012_val_{:08d}"
_DEVKIT_IMAGE_PATTERN = re.compile(r"ILSVRC2012_val_(\d{8})")


@dataclass(frozen=True)
class LabelledImage:
    """An image and its true class; real_labels, when ReaL labels are used, are the classes that count as hits."""

    path: str
    true_index: int
    real_labels: tuple | None = None
    # What the pipeline reads for it when that is not the file at path: a sources.remote.RemoteImage
    # (an object in a bucket, a member of a tar shard).
    item: object = None

    @property
    def input(self):
        """What the pipeline is given for this image: its item, else its path."""
        return self.path if self.item is None else self.item

    @property
    def accepted(self):
        return frozenset(self.real_labels) if self.real_labels is not None else frozenset((self.true_index,))


@dataclass
class GroundTruth:
    """The images of an evaluation folder with their labels, and what could not be matched."""

    folder: str
    layout: str
    images: list
    found: int
    skipped: list = field(default_factory=list)
    # Labels file (or ReaL file) path -> names in it that match no image, in file order.
    labels_without_image: dict = field(default_factory=dict)
    labels_file: str | None = None
    real_labels_file: str | None = None
    # Folders and links under folder that were not searched (walk_images), and why.
    not_followed: list = field(default_factory=list)
    # Class folders that name one class: [{"index", "wnid", "label", "folders": [...]}], counted together.
    merged_class_folders: list = field(default_factory=list)
    # Sources that could not be read at all (a tar shard missing, or damaged in a header): Skipped entries, also
    # in not_followed. Their images are unknown and not in the figures, so the run cannot say it saw everything.
    unreadable: list = field(default_factory=list)
    # The images are --shard's part already: tar shards are split whole, before they are indexed.
    shard_taken: bool = False


class ClassNameError(ValueError):
    """A class name that is not exactly one of the classes in use; the message says why."""


def resolve_class_name(name, classes):
    """The class index a folder name or label-file value means, and how it was read.

    Tried in this order: a WordNet id, a Keras label (exactly, then ignoring case and
    spaces/hyphens for underscores), an integer index 0..999. Raises ClassNameError.
    """
    text = name.strip()
    if text in classes.index_of_wnid:
        return classes.index_of_wnid[text], "wnid"
    indices = classes.indices_of_label.get(text)
    if indices is None:
        indices = _labels_ignoring_case(classes).get(_fold_label(text))
    if indices is not None:
        if len(indices) > 1:
            if all(classes.wnid(i) for i in indices):
                choices = " and ".join(f"{classes.wnid(i)} (index {i}, {classes.labels[i]})" for i in indices)
                use = "the WordNet id"
            else:  # a user's classes without WordNet ids: the index is the only other name
                choices = " and ".join(f"index {i}" for i in indices)
                use = "the index"
            raise ClassNameError(f'"{text}" names {classes.describe(len(indices))}, {choices}; use {use} instead')
        return indices[0], "label"
    if re.fullmatch(r"\d+", text, flags=re.ASCII) and int(text) < len(classes):
        return int(text), "index"
    nearest = difflib.get_close_matches(text, classes.labels, n=3, cutoff=0.6)
    if not nearest:
        nearest = difflib.get_close_matches(_fold_label(text), sorted(_labels_ignoring_case(classes)), n=3, cutoff=0.6)
    hint = f"nearest labels: {', '.join(dict.fromkeys(nearest))}" if nearest else "no label is close"
    raise ClassNameError(f'"{text}" is not {classes.describe()} ({classes.name_forms()}); {hint}')


def _fold_label(text):
    return re.sub(r"[\s-]+", "_", text.strip()).lower()


def _labels_ignoring_case(classes):
    folded = {}
    for label, indices in classes.indices_of_label.items():
        folded.setdefault(_fold_label(label), []).extend(indices)
    return folded


@dataclass
class ImageListing:
    """What ground truth is worked out from: the images under root (a folder, or a bucket prefix listed once), in
    sorted order, and the class folders directly in it; local folders and prefixes feed the same code."""

    root: str
    paths: list
    class_folders: list
    # Folders and links under root that were not searched (a local walk's; walk_images).
    not_followed: list = field(default_factory=list)
    remote: bool = False

    def relative(self, path):
        """path relative to root, with / between its parts."""
        if self.remote:
            return path[len(self.root.rstrip("/")) + 1:]
        return Path(os.path.relpath(path, self.root)).as_posix()

    def child(self, name):
        """The folder (or prefix) name directly in root."""
        return f"{self.root.rstrip('/')}/{name}" if self.remote else os.path.join(self.root, name)

    def item(self, path):
        """What the pipeline reads for the image at path (LabelledImage.item): None for a local file."""
        return RemoteImage(path, path) if self.remote else None

    def top_level_reason(self, path):
        """Why an image directly in root is left out."""
        return "not in a class folder" if self.remote else _top_level_reason(path)


def list_folder(folder, lister=None):
    """The ImageListing of a local folder (walked once) or of a URL prefix (listed once, by lister: a callable
    giving the sorted image URLs under a prefix, sources.remote.list_images unless given)."""
    folder = str(folder)
    if is_url(folder):
        return _prefix_listing(folder, (lister or list_images)(folder))
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: not a folder")
    walk = walk_images(folder)
    with os.scandir(folder) as scan:
        class_folders = sorted(entry.name for entry in scan
                               if not entry.name.startswith(".") and _entry_kind(entry) in ("folder", "folder link"))
    return ImageListing(folder, walk.paths, class_folders, walk.skipped)


def _prefix_listing(url, urls):
    # The prefix spelled as the listing spells its keys (s3://bucket/val), so that keys are cut at the right place.
    fs, path = filesystem(url)
    root = fs.unstrip_protocol(path.rstrip("/"))
    listing = ImageListing(root, [], [], remote=True)
    folders = set()
    for found in urls:
        if not found.startswith(root + "/"):
            continue
        parts = listing.relative(found).split("/")
        if any(part.startswith(".") for part in parts):
            continue  # hidden, as a folder walk skips hidden entries
        listing.paths.append(found)
        if len(parts) > 1:
            folders.add(parts[0])
    listing.class_folders = sorted(folders)
    return listing


def find_folder_ground_truth(folder, labels_file=None, real_labels_file=None, classes=None, lister=None):
    """Work out the true class of every image under folder (sources.inputs.find_ground_truth, which also takes tar
    shards, is the way in); raise DatasetError when it cannot be.

    Without labels_file the folder must hold class folders (WordNet ids, Keras labels or
    indices); with it, the labels file is read by its content (CSV/TSV with a header, Kaggle's
    LOC_val_solution.csv, or the ILSVRC2012 devkit's validation ground truth).
    folder may be a URL prefix (s3://bucket/val/): listed once (lister, see list_folder), its
    class folders are the first part of the keys under it; labels files may be URLs too.
    """
    from ..labels import imagenet_classes

    classes = classes or imagenet_classes()
    listing = list_folder(folder, lister)
    if labels_file is not None:
        truth = _from_labels_file(listing, str(labels_file), classes)
    else:
        truth = _from_class_folders(listing, classes)
    return completed_ground_truth(truth, listing.root, listing.not_followed, real_labels_file, classes)


def completed_ground_truth(truth, root, not_followed, real_labels_file, classes, noun="image files"):
    """truth with what was not followed (folders, links, shards) and the ReaL labels applied; DatasetError naming
    root when no image is left to evaluate, with the first reason why."""
    truth.not_followed = not_followed
    if real_labels_file is not None:
        _apply_real_labels(truth, str(real_labels_file), classes)
    if not truth.images:
        why = f"{truth.found} {noun} found" if truth.found else f"no {noun} found"
        if truth.skipped:
            why += f", none labelled (first: {truth.skipped[0].path}: {truth.skipped[0].reason})"
        elif not_followed:
            why += f" ({not_followed[0].path}: {not_followed[0].reason})"
        raise DatasetError(f"{root}: nothing to evaluate: {why}")
    return truth


def _from_class_folders(listing, classes):
    folder, paths, class_folders = listing.root, listing.paths, listing.class_folders
    if not class_folders:
        raise DatasetError(f"{folder}: no class folders in it, and no --labels FILE; put each class's images in "
                           f"a folder named by WordNet id, Keras label or index, or pass --labels")
    index_of_folder, kinds = {}, set()
    for name in class_folders:
        try:
            index_of_folder[name], kind = resolve_class_name(name, classes)
        except ClassNameError as exc:
            raise DatasetError(f"{listing.child(name)}: {exc}") from None
        kinds.add(kind)
    images, skipped = [], []
    for path in paths:
        parts = listing.relative(path).split("/")
        if len(parts) == 1:
            skipped.append(Skipped(path, listing.top_level_reason(path)))
        elif parts[0] in index_of_folder:
            images.append(LabelledImage(path, index_of_folder[parts[0]], item=listing.item(path)))
    readable = {"wnid": "WordNet ids", "label": "Keras labels", "index": "class indices"}
    names = [readable[k] for k in ("wnid", "label", "index") if k in kinds]
    layout = "class folders named by " + (" and ".join(names) if len(names) < 3 else f"{names[0]}, {names[1]} and {names[2]}")
    folders_of_class = {}
    for name in class_folders:
        folders_of_class.setdefault(index_of_folder[name], []).append(name)
    merged = [{**_class_fields(classes, index), "folders": names}
              for index, names in sorted(folders_of_class.items()) if len(names) > 1]
    return GroundTruth(folder, layout, images, found=len(paths), skipped=skipped, merged_class_folders=merged)


def _top_level_reason(path):
    # An image file directly in FOLDER is skipped; a broken link there is named for what it is.
    try:
        os.stat(path)
    except OSError as exc:
        return file_error_reason(exc, path)
    return "not in a class folder"


def _class_fields(classes, index):
    return {"index": index, "wnid": classes.wnid(index), "label": classes.labels[index]}


def _from_labels_file(listing, labels_file, classes):
    folder, paths = listing.root, listing.paths
    try:
        text = read_file(labels_file).decode("utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"{labels_file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{labels_file}: not a text file (UTF-8)") from None
    lines = text.splitlines()
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DatasetError(f"{labels_file}: empty labels file")
    header = numbered[0][1].replace(" ", "").lower()
    if header.startswith("imageid,predictionstring"):
        kind, entries = "Kaggle LOC_val_solution.csv", _kaggle_entries(labels_file, lines, classes)
    elif all(re.fullmatch(r"\s*\d+\s*", line) for _, line in numbered):
        kind, entries = "ILSVRC2012 devkit validation ground truth", _devkit_entries(labels_file, numbered, classes)
    else:
        delimiter = "\t" if "\t" in numbered[0][1] else ","
        kind = "TSV" if delimiter == "\t" else "CSV"
        entries = _table_entries(labels_file, lines, delimiter, classes)

    lookup = _ImageLookup(listing)
    label_of_path, line_of_path, without_image = {}, {}, []
    for number, name, index in entries:
        path = lookup.find(name)
        if path is None:
            without_image.append(name)
            continue
        if path in label_of_path and label_of_path[path] != index:
            raise DatasetError(f"{labels_file}: line {number}: {name} is labelled again with a different class "
                               f"({classes.labels[index]}; line {line_of_path[path]} says "
                               f"{classes.labels[label_of_path[path]]})")
        label_of_path.setdefault(path, index)
        line_of_path.setdefault(path, number)
    images = [LabelledImage(path, label_of_path[path], item=listing.item(path)) for path in paths
              if path in label_of_path]
    skipped = [Skipped(path, "no label in the labels file") for path in paths if path not in label_of_path]
    return GroundTruth(folder, f"labels file ({kind})", images, found=len(paths), skipped=skipped,
                       labels_without_image={labels_file: without_image} if without_image else {},
                       labels_file=labels_file)


def _class_or_error(labels_file, number, value, classes):
    try:
        return resolve_class_name(value, classes)[0]
    except ClassNameError as exc:
        raise DatasetError(f"{labels_file}: line {number}: {exc}") from None


def _table_entries(labels_file, lines, delimiter, classes):
    rows = [(number, row) for number, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1)
            if any(cell.strip() for cell in row)]
    header = [cell.strip().lower() for cell in rows[0][1]]
    file_column = next((header.index(name) for name in FILE_COLUMNS if name in header), None)
    label_column = next((header.index(name) for name in LABEL_COLUMNS if name in header), None)
    if (file_column is None or label_column is None) and len(header) == 2:
        if is_image_file(header[0]) or _looks_like_a_class(header[1], classes):
            raise DatasetError(f"{labels_file}: line {rows[0][0]}: the first line must be a header naming the "
                               f"file and label columns (e.g. filename,label)")
        file_column, label_column = 0, 1
    if file_column is None or label_column is None:
        raise DatasetError(f"{labels_file}: line {rows[0][0]}: cannot tell the file and label columns from the "
                           f"header {delimiter.join(rows[0][1])!r}; name them filename and label")
    entries = []
    for number, row in rows[1:]:
        if len(row) <= max(file_column, label_column):
            raise DatasetError(f"{labels_file}: line {number}: expected {len(header)} columns, found {len(row)}")
        name, value = row[file_column].strip(), row[label_column].strip()
        entries.append((number, name, _class_or_error(labels_file, number, value, classes)))
    return entries


def _looks_like_a_class(text, classes):
    try:
        resolve_class_name(text, classes)
    except ClassNameError:
        return False
    return True


def _kaggle_entries(labels_file, lines, classes):
    entries = []
    for number, row in enumerate(csv.reader(lines), start=1):
        if number == 1 or not any(cell.strip() for cell in row):
            continue
        tokens = row[1].split() if len(row) >= 2 else []
        if not tokens:
            raise DatasetError(f"{labels_file}: line {number}: no PredictionString")
        entries.append((number, row[0].strip(), _class_or_error(labels_file, number, tokens[0], classes)))
    return entries


def _devkit_entries(labels_file, numbered, classes):
    from ..labels import ilsvrc2012_id_to_wnid

    id_to_wnid = ilsvrc2012_id_to_wnid()
    entries = []
    # Line n is the class of ILSVRC2012_val_0000000n, counting blank lines out.
    for image_number, (line_number, line) in enumerate(numbered, start=1):
        ilsvrc_id = int(line)
        if ilsvrc_id not in id_to_wnid:
            raise DatasetError(f"{labels_file}: line {line_number}: {ilsvrc_id} is not an ILSVRC2012 class ID "
                               f"(1..{len(id_to_wnid)})")
        wnid = id_to_wnid[ilsvrc_id]
        if wnid not in classes.index_of_wnid:
            raise DatasetError(f"{labels_file}: line {line_number}: ILSVRC2012 class ID {ilsvrc_id} is {wnid}, "
                               f"which is not {classes.describe()}")
        index = classes.index_of_wnid[wnid]
        entries.append((line_number, DEVKIT_IMAGE_NAME.format(image_number), index))
    return entries


class _ImageLookup:
    """Finds an image from the name a labels file gives it: a path relative to the folder or a
    base name, with or without its extension; a name that fits several images fits none."""

    def __init__(self, listing):
        self.keys = ({}, {}, {}, {})
        for path in listing.paths:
            relative = listing.relative(path)
            base = os.path.basename(relative)
            for table, key in zip(self.keys, (relative, _stem(relative), base, _stem(base))):
                table.setdefault(key, []).append(path)

    def find(self, name):
        name = name.strip().replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        candidates = [name] + ([_stem(name)] if is_image_file(name) else [])
        for candidate in candidates:
            for table in self.keys:
                found = table.get(candidate, ())
                if len(found) == 1:
                    return found[0]
        return None


def _stem(name):
    root, extension = os.path.splitext(name)
    return root if extension else name


def _apply_real_labels(truth, real_labels_file, classes):
    """Replace each image's hits with its ReaL label set; an empty set takes the image out.

    The ReaL file lists one label list per validation image, in sorted file-name order. An image
    named ILSVRC2012_val_%08d takes the entry of its number, so a part of the validation set lines
    up; otherwise the n-th image in file-name order takes the n-th entry.
    """
    try:
        real = json.loads(read_file(real_labels_file).decode("utf-8"))
    except OSError as exc:
        raise DatasetError(f"{real_labels_file}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{real_labels_file}: not JSON: {exc}") from None
    if not isinstance(real, list) or not all(
            isinstance(entry, list) and all(type(i) is int and 0 <= i < len(classes) for i in entry) for entry in real):
        raise DatasetError(f"{real_labels_file}: expected a JSON list of lists of class indices "
                           f"0..{len(classes) - 1}, as ReaL's real.json")
    numbers = [_DEVKIT_IMAGE_PATTERN.fullmatch(_stem(os.path.basename(image.path))) for image in truth.images]
    if truth.images and all(numbers):
        position = {image.path: int(match.group(1)) - 1 for image, match in zip(truth.images, numbers)}

        def entry_name(n):
            return DEVKIT_IMAGE_NAME.format(n + 1)
    else:
        in_name_order = sorted(truth.images, key=lambda image: (os.path.basename(image.path), image.path))
        position = {image.path: n for n, image in enumerate(in_name_order)}

        def entry_name(n):
            return f"entry {n + 1}"
    images, used = [], set()
    for image in truth.images:
        n = position[image.path]
        if n >= len(real):
            truth.skipped.append(Skipped(image.path, "no entry in the ReaL labels"))
            continue
        used.add(n)
        if not real[n]:
            truth.skipped.append(Skipped(image.path, "no ReaL label (excluded by ReaL)"))
            continue
        images.append(LabelledImage(image.path, image.true_index, tuple(real[n]), image.item))
    truth.skipped.sort(key=lambda skipped: skipped.path)
    truth.images = images
    truth.real_labels_file = real_labels_file
    truth.layout += ", hits counted against ReaL labels"
    unused = [entry_name(n) for n in range(len(real)) if n not in used]
    if unused:
        truth.labels_without_image[real_labels_file] = unused
