"""Tar shards in the WebDataset layout (000123.jpg beside 000123.cls): shard names expanded (a path or URL, a glob,
the brace form val-{000000..000099}.tar), each shard indexed once by reading its headers as a stream, never
unpacked, its image members named shard/member and read later by byte range; ground truth from the siblings."""

import glob
import json
import os
import re
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..errors import DatasetError, InputError, StorageError
from ..images import file_error_reason
from .ground_truth import (ClassNameError, GroundTruth, ImageListing, LabelledImage, _from_labels_file,
                           completed_ground_truth, first_few, resolve_class_name)
from .local import Skipped, is_image_file
from .remote import RemoteImage, error_line, filesystem, is_url, read_bytes

# A member with one of these extensions (after the key's first dot) holds its sample's class; the first
# present wins. .cls: an integer class index; .txt: a class name (WordNet id, label or index); .json: an
# object whose first key of JSON_CLASS_KEYS present gives the class (an index or a name).
LABEL_EXTENSIONS = ("cls", "txt", "json")
JSON_CLASS_KEYS = ("label", "class", "cls", "wnid", "class_name", "class_index", "class_id", "synset", "target",
                   "category")
# A label member larger than this is not a label (a caption, a mask): read no further.
MAX_LABEL_BYTES = 64 * 1024
# Bytes a remote shard is read in while it is indexed (one request each): few requests, bounded memory.
STREAM_BLOCK_BYTES = 8 * 1024 * 1024
# Shards indexed at once: a remote shard is read whole to find its headers, so several overlap their latency.
INDEXING_THREADS = 8

_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def expand_braces(text):
    """The names the WebDataset brace form stands for, in order: val-{000..002}.tar (a numeric range, zero-padded
    to its ends' width when one is written with a leading zero) and {a,b} (a list); several braces multiply."""
    match = _BRACES.search(text)
    if match is None:
        return [text]
    inside, head, tail = match.group(1), text[:match.start()], text[match.end():]
    bounds = _RANGE.fullmatch(inside)
    if bounds:
        low, high = bounds.groups()
        padded = any(len(end.lstrip("-")) > 1 and end.lstrip("-").startswith("0") for end in (low, high))
        width = max(len(low), len(high)) if padded else 0
        step = 1 if int(high) >= int(low) else -1
        choices = [str(n).zfill(width) for n in range(int(low), int(high) + step, step)]
    elif "," in inside:
        choices = inside.split(",")
    else:
        choices = [match.group(0)]  # not a brace expression (a literal {x}): kept as written
    return [head + choice + rest for choice in choices for rest in expand_braces(tail)]


def names_tar_shards(argument):
    """Whether an input argument names tar shards: a path or URL ending in .tar, a glob of them, or the brace form."""
    text = str(argument)
    if not (text.lower().endswith(".tar") or text.endswith("}")):
        return False
    return all(name.lower().endswith(".tar") for name in expand_braces(text))


def shard_names(argument):
    """The shards an argument names, in order: braces expanded, globs matched (sorted; a remote glob through its
    filesystem). A glob that matches nothing is an InputError in place of its shards."""
    names = []
    for name in expand_braces(str(argument)):
        if not _GLOB_CHARACTERS.search(name) or (not is_url(name) and os.path.isfile(name)):
            names.append(name)
            continue
        matched = [found for found in _glob(name) if found.lower().endswith(".tar")]
        names.extend(matched or [InputError(name, "no tar shards match this pattern")])
    return names


def _glob(pattern):
    if not is_url(pattern):
        return sorted(glob.glob(pattern))
    fs, path = filesystem(pattern)
    try:
        return sorted(fs.unstrip_protocol(found) for found in fs.glob(path))
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        raise StorageError(f"{pattern}: {error_line(exc, 'access denied')}") from None


@dataclass(frozen=True)
class TarMember:
    """A member's data in its shard: bytes start..start+size, of which `present` are there (fewer: cut short)."""

    name: str
    start: int
    size: int
    present: int

    @property
    def key(self):
        """WebDataset's sample key: the name up to the first dot of its base name."""
        folder, _, base = self.name.rpartition("/")
        return (folder + "/" if folder else "") + base.split(".", 1)[0]

    @property
    def extension(self):
        """What follows the key's first dot, lower-cased ("jpg", "cls", "seg.png")."""
        base = self.name.rpartition("/")[2]
        return base.split(".", 1)[1].lower() if "." in base else ""

    @property
    def cut_short(self):
        return self.present < self.size


@dataclass
class ShardIndex:
    """What indexing one shard found: its image members, its label members (with their bytes when asked for),
    the members it does not use (as Skipped entries naming the shard), and errors of the shard as a whole."""

    shard: str
    images: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)  # key -> {extension: bytes, or None when cut short or too large}
    unused: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def member_path(self, member):
        return f"{self.shard}/{member.name}"

    def items(self):
        """The pipeline's inputs for its images, in tar order: a RemoteImage reading the member's bytes by range,
        or the InputError of a member cut short; then the shard's own errors (a cut-short or damaged header)."""
        items = [self.item(member) for member in self.images] + self.errors
        return items or [InputError(self.shard, "no image members in this tar shard")]

    def item(self, member):
        path = self.member_path(member)
        if member.cut_short:
            return InputError(path, f"cut short: {member.present} of {member.size} bytes in the shard")
        return RemoteImage(path, self.shard, member.start, member.start + member.size)


def index_shards(names, read_labels=False):
    """ShardIndex of each shard name (InputErrors, from shard_names, pass through), in order; read at once."""
    names = list(names)
    todo = [name for name in names if not isinstance(name, InputError)]
    if len(todo) > 1:
        with ThreadPoolExecutor(max_workers=min(INDEXING_THREADS, len(todo))) as pool:
            done = dict(zip(todo, pool.map(lambda name: index_shard(name, read_labels), todo)))
    else:
        done = {name: index_shard(name, read_labels) for name in todo}
    return [name if isinstance(name, InputError) else done[name] for name in names]


def index_shard(shard, read_labels=False):
    """Read a shard's headers once, member by member (a local file seeking past the data, a remote one streamed
    through fsspec), keeping offsets; label members' bytes too when read_labels. Never raises for the shard's
    own faults: they become its errors (InputError), and the members read before a fault are kept."""
    index = ShardIndex(shard)
    try:
        if is_url(shard):
            fs, path = filesystem(shard)
            with fs.open(path, "rb", block_size=STREAM_BLOCK_BYTES) as stream:
                size = getattr(stream, "size", None)
                if size is None:
                    size = fs.size(path)
                _walk(index, tarfile.open(fileobj=stream, mode="r|", tarinfo=_WatchedTarInfo), size, read_labels)
        else:
            with open(shard, "rb") as stream:
                size = os.fstat(stream.fileno()).st_size
                _walk(index, tarfile.open(fileobj=stream, mode="r:", tarinfo=_WatchedTarInfo), size, read_labels)
    except tarfile.TarError as exc:  # at its first header: not a tar (a compressed one, another file)
        index.errors.append(InputError(shard, f"not a tar file ({exc})" if str(exc) != "empty file" else "empty file"))
    except OSError as exc:  # missing, denied, a folder, a connection that failed: the others go on
        index.errors.append(InputError(shard, _unreadable_reason(exc, shard)))
    return index


def _unreadable_reason(exc, shard):
    if not is_url(shard):
        return file_error_reason(exc, shard)
    if isinstance(exc, FileNotFoundError):
        return error_line(exc, "no such object")
    if isinstance(exc, PermissionError):
        return error_line(exc, "access denied")
    return error_line(exc, type(exc).__name__)


class _WatchedTarInfo(tarfile.TarInfo):
    """TarInfo that notes on its TarFile why a header could not be read: tarfile ends the archive quietly at a
    damaged or cut-short header after the first, and the difference matters here."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            # The first one is the cause (a pax or long-name header wraps the next header's in its own).
            if not hasattr(tar, "header_problem"):
                tar.header_problem = (tar.offset, exc)
            raise


def _walk(index, tar, size, read_labels):
    members = []
    while True:
        try:
            info = tar.next()
        except tarfile.TarError:  # data past the end of the shard, or a header tarfile gave up on: see below
            break
        if info is None:
            break
        base = info.name.rpartition("/")[2]
        if not info.isreg() or base.startswith("."):
            continue  # folders, links; hidden files, as a folder walk skips them
        member = TarMember(info.name, info.offset_data, info.size, max(0, min(info.size, size - info.offset_data)))
        members.append(member)
        if read_labels and member.extension in LABEL_EXTENSIONS:
            index.labels.setdefault(member.key, {})[member.extension] = _label_bytes(tar, info, member)
    # Past a member cut short nothing more is there: its error says so. Otherwise a header tarfile stopped at
    # (ending the archive quietly) is this shard's error, unless the shard ends right there (no end-of-archive
    # blocks: nothing known is lost); so is padding cut short after the last member's data.
    offset, problem = getattr(tar, "header_problem", (None, None))
    if not any(member.cut_short for member in members):
        if isinstance(problem, (tarfile.TruncatedHeaderError, tarfile.EmptyHeaderError)) and offset < size:
            index.errors.append(InputError(index.shard, f"cut short at byte {offset}: a member's header is incomplete"))
        elif isinstance(problem, (tarfile.InvalidHeaderError, tarfile.SubsequentHeaderError)):
            index.errors.append(InputError(index.shard, f"damaged tar header at byte {offset} "
                                                        f"({error_line(problem, 'unreadable')}); "
                                                        f"the members after it are not read"))
    _sort_members(index, members)


def _label_bytes(tar, info, member):
    if member.cut_short or member.size > MAX_LABEL_BYTES:
        return None
    try:
        return tar.extractfile(info).read()
    except (tarfile.TarError, OSError):
        return None


def _sort_members(index, members):
    image_keys = {member.key for member in members if is_image_file(member.name)}
    others, orphans = [], []
    for member in members:
        if is_image_file(member.name):
            index.images.append(member)
        elif member.extension in LABEL_EXTENSIONS:
            if member.key not in image_keys:
                orphans.append(member.name)
        else:
            others.append(member.name)
    if others:
        index.unused.append(Skipped(index.shard, f"{_members(len(others))} neither an image nor a label "
                                                 f"(.cls, .txt, .json), not used: {first_few(others)}"))
    if orphans:
        index.unused.append(Skipped(index.shard, f"{_members(len(orphans), 'label member')} with no image, "
                                                 f"not used: {first_few(orphans)}"))


def _members(count, what="member"):
    return f"{count} {what}{'s' if count != 1 else ''}"


def expand_shards(argument, on_skip=None):
    """An input argument naming tar shards as the pipeline's inputs: each image member a RemoteImage (path
    shard/member), a member cut short or a shard that cannot be read an InputError; on_skip(Skipped) hears
    of the members not used."""
    return expand_shard_names(shard_names(argument), on_skip)


def part_of_shards(names, shard):
    """--shard's part of a list of shard names (and InputErrors in place of globs that matched none): whole tar
    shards, split as files are (sorted, contiguous), so that each task of an array indexes only its own shards."""
    return shard.take(names, key=lambda name: name.path if isinstance(name, InputError) else name)


def expand_shard_names(names, on_skip=None):
    """The pipeline's inputs for a list of shard names (see expand_shards)."""
    items = []
    for index in index_shards(names):
        if isinstance(index, InputError):
            items.append(index)
            continue
        for skipped in index.unused:
            if on_skip is not None:
                on_skip(skipped)
        items.extend(index.items())
    return items


def find_tar_ground_truth(argument, labels_file=None, real_labels_file=None, classes=None, shard=None):
    """The GroundTruth of the image members of the shards an argument names: each one's class from its
    sibling (.cls, .txt or .json, the first present), or from labels_file when given (matched by member name
    or key, as a labels file matches file names). Shards that cannot be read, and members not used, are
    listed in not_followed; a sibling that names no class is a DatasetError. shard (sources.shards.Shard), if
    given, keeps its part of the shards before any is indexed (the GroundTruth's shard_taken says so); a part
    with no shard at all (more tasks than shards) is an empty GroundTruth, not an error."""
    from ..labels import imagenet_classes

    classes = classes or imagenet_classes()
    argument = str(argument)
    names = shard_names(argument)
    if shard is not None:
        names = part_of_shards(names, shard)
        if not names:
            return GroundTruth(argument, "tar shards", [], 0, shard_taken=True)
    indexes = index_shards(names, read_labels=labels_file is None)
    readable = [index for index in indexes if not isinstance(index, InputError)]
    unreadable = [Skipped(index.path, index.reason) for index in indexes if isinstance(index, InputError)]
    for index in readable:
        unreadable += [Skipped(error.path, error.reason) for error in index.errors]
    not_followed = unreadable + [skipped for index in readable for skipped in index.unused]
    members = sorted(((index.member_path(member), index, member) for index in readable for member in index.images),
                     key=lambda entry: entry[0])
    item_of = {path: index.item(member) for path, index, member in members}
    if labels_file is not None:
        listing = ImageListing(_common_folder(index.shard for index in readable), list(item_of), class_folders=[])
        truth = _from_labels_file(listing, str(labels_file), classes)
        truth.images = [replace(image, item=item_of[image.path]) for image in truth.images]
        truth.layout = f"tar shards, {truth.layout}"
        truth.folder = argument
    else:
        truth = _from_siblings(argument, members, item_of, classes)
    truth.unreadable = unreadable
    truth.shard_taken = shard is not None
    return completed_ground_truth(truth, argument, not_followed, real_labels_file, classes, noun="image members")


def _common_folder(shards):
    # A labels file names a member as a path under the shards' folder (val-000003.tar/000123.jpg), by its
    # name, or by its key; the lookup works that out relative to this folder.
    folders = [os.path.abspath(os.path.dirname(shard) or ".") for shard in shards]
    return os.path.commonpath(folders) if folders else "."


def _from_siblings(argument, members, item_of, classes):
    images, skipped, kinds = [], [], set()
    for path, index, member in members:
        siblings = index.labels.get(member.key, {})
        extension = next((extension for extension in LABEL_EXTENSIONS if extension in siblings), None)
        if extension is None:
            skipped.append(Skipped(path, "no .cls, .txt or .json sibling"))
            continue
        label_path = f"{index.shard}/{member.key}.{extension}"
        true_index = _sibling_class(label_path, extension, siblings[extension], classes)
        if isinstance(true_index, Skipped):
            skipped.append(replace(true_index, path=path))
            continue
        kinds.add(extension)
        images.append(LabelledImage(path, true_index, item=item_of[path]))
    used = [f".{extension}" for extension in LABEL_EXTENSIONS if extension in kinds]
    layout = f"tar shards ({' and '.join(used) if used else 'no labels'})"
    return GroundTruth(argument, layout, images, found=len(members), skipped=skipped)


def _sibling_class(label_path, extension, data, classes):
    """The class index a label member gives, a Skipped saying why it gives none, or DatasetError for a bad one."""
    if data is None:
        return Skipped(label_path, f"its .{extension} sibling is cut short or larger than {MAX_LABEL_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise DatasetError(f"{label_path}: not text (UTF-8)") from None
    if extension == "cls":
        if re.fullmatch(r"\d+", text, flags=re.ASCII) and int(text) < len(classes):
            return int(text)
        raise DatasetError(f"{label_path}: {text[:40]!r} is not a class index 0..{len(classes) - 1}")
    if extension == "json":
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"{label_path}: not JSON: {exc}") from None
        key = next((key for key in JSON_CLASS_KEYS if isinstance(value, dict) and key in value), None)
        if key is None:
            return Skipped(label_path, f"its .json sibling has no class ({', '.join(JSON_CLASS_KEYS)})")
        value = value[key]
        if type(value) is int:
            if 0 <= value < len(classes):
                return value
            raise DatasetError(f"{label_path}: \"{key}\": {value} is not a class index 0..{len(classes) - 1}")
        if not isinstance(value, str):
            raise DatasetError(f"{label_path}: \"{key}\" is neither a class index nor a class name")
        text = value
    try:
        return resolve_class_name(text, classes)[0]
    except ClassNameError as exc:
        raise DatasetError(f"{label_path}: {exc}") from None


class MemberReader:
    """The bytes of members of local tar shards, found by their records' paths (shards/val-000003.tar/000123.jpg),
    each shard indexed once: what the HTML report's thumbnails are made from. Shards in a bucket are not read
    (indexing one streams it whole), nor is anything but a member of a local tar file."""

    def __init__(self):
        self._indexes = {}
        self._lock = threading.Lock()

    def read(self, path):
        """The member's bytes, None where path names no member of a local tar shard, or InputError."""
        shard, separator, name = str(path).partition(".tar/")
        shard += ".tar"
        if not separator or is_url(shard) or not os.path.isfile(shard):
            return None
        with self._lock:  # one indexing per shard, whichever thumbnail asks first
            if shard not in self._indexes:
                self._indexes[shard] = index_shards([shard])[0]
            index = self._indexes[shard]
        if isinstance(index, InputError):
            raise InputError(path, index.reason)
        member = next((member for member in index.images if member.name == name), None)
        if member is None:
            raise InputError(path, "no such image member in the shard")
        item = index.item(member)
        if isinstance(item, InputError):
            raise item
        return read_bytes(item)
