"""Inputs on a local disk: image files, folders walked once each (links that loop are not followed),
paths on stdin; each one a path or the InputError saying why it cannot be read."""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..images import IMAGE_EXTENSIONS, file_error_reason


@dataclass(frozen=True)
class Skipped:
    """A file or folder found that is not used (not searched, not followed, not evaluated), and why."""

    path: str
    reason: str


def is_image_file(name):
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder):
    """Image files under folder, recursively, hidden entries skipped, in sorted order (see walk_images)."""
    return walk_images(folder).paths


@dataclass
class FolderWalk:
    """What walk_images found: image paths in sorted order, and the entries it did not follow (Skipped)."""

    paths: list
    skipped: list


LINK_LOOP = "symbolic link loop, not followed"
LINK_TO_SEARCHED_FOLDER = "symbolic link to a folder already searched, not followed"


def walk_images(folder):
    """Image files under folder, recursively, hidden entries skipped, each real folder searched once.

    Real subfolders are searched first, so every image keeps its own path; then each symbolic link
    to a folder is followed, unless it leads to a folder already searched or to one that contains
    it (a loop): those are skipped and listed, as are broken links and folders that cannot be read.
    A file whose name looks like an image is listed whatever it is (a broken link, a FIFO):
    load_image says what is wrong with it, so it gets an error record rather than vanishing.
    """
    folder = str(folder)
    root_real = os.path.realpath(folder)
    seen = {_folder_key(folder)}
    paths, links, skipped = [], [], []

    def search(top):
        stack = [top]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as scan:
                    entries = sorted(scan, key=lambda entry: entry.name)
            except OSError as exc:
                skipped.append(Skipped(current, f"folder not searched: {file_error_reason(exc, current)}"))
                continue
            subfolders = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                kind = _entry_kind(entry)
                if kind == "folder":
                    subfolders.append(entry.path)
                elif kind == "folder link":
                    links.append(entry.path)
                elif is_image_file(entry.name):
                    paths.append(entry.path)
                elif kind is not None:  # a broken link that might have been a folder
                    skipped.append(Skipped(entry.path, f"{kind}, not followed"))
            for path in reversed(subfolders):
                key = _folder_key(path)
                if key is not None and key not in seen:
                    seen.add(key)
                    stack.append(path)

    search(folder)
    while links:
        link = links.pop(0)
        key = _folder_key(link)
        if key is None:
            continue  # gone since it was listed
        target = os.path.realpath(link)
        if _contains(target, root_real) or _contains(target, os.path.realpath(os.path.dirname(link))):
            skipped.append(Skipped(link, LINK_LOOP))
        elif key in seen:
            skipped.append(Skipped(link, LINK_TO_SEARCHED_FOLDER))
        else:
            seen.add(key)
            search(link)
    # Sorted as a whole, so that "a/b.jpg" and "a/b/c.jpg" come in the order a user sees in
    # `ls -R | sort`, and images found through links fall in place.
    paths.sort()
    skipped.sort(key=lambda entry: entry.path)
    return FolderWalk(paths, skipped)


def _entry_kind(entry):
    """'folder', 'folder link', None for anything else that exists, or a broken link's reason."""
    try:
        if entry.is_dir():
            return "folder link" if entry.is_symlink() else "folder"
        if entry.is_symlink() and not os.path.exists(entry.path):
            return "broken symbolic link"
        return None
    except OSError as exc:  # a symbolic link loop
        return file_error_reason(exc, entry.path)


def _folder_key(path):
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _contains(outer, inner):
    """Whether real path outer is inner or one of its parents."""
    return os.path.commonpath([outer, inner]) == outer


def expand_local_path(path, on_skip=None):
    """A local path argument as inputs: a folder's images (walk_images; on_skip(Skipped) hears of each entry not
    followed), a file as it is, or the InputError saying why it cannot be used."""
    try:
        is_folder = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as exc:
        return [InputError(path, file_error_reason(exc, path))]
    if not is_folder:
        return [path]  # load_image refuses anything but a regular file, without opening it
    walk = walk_images(path)
    for skipped in walk.skipped:
        if on_skip is not None:
            on_skip(skipped)
    return walk.paths or [InputError(path, "no image files found in this folder")]
