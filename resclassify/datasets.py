"""Finding inputs: files, folders searched for images, paths read from stdin; never the model."""

import os
from pathlib import Path

from .errors import InputError
from .images import IMAGE_EXTENSIONS


def is_image_file(name):
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder):
    """Image files under folder, recursively, hidden entries skipped, in sorted order."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_image_file(name):
                found.append(os.path.join(root, name))
    # os.walk visits a folder's files before its subfolders; sort the whole list so that
    # "a/b.jpg" and "a/b/c.jpg" come in the order a user sees in `ls -R | sort`.
    found.sort()
    return found


def expand_inputs(inputs, stdin=None):
    """The command's INPUT arguments as a list of image paths, with an InputError in place of each bad one.

    A folder becomes its images; "-" becomes the paths listed on stdin, one a line.
    """
    items = []
    for argument in inputs:
        if argument == "-":
            lines = (line.rstrip("\r\n") for line in (stdin if stdin is not None else []))
            items.extend(_expand_path(line) for line in lines if line.strip())
        else:
            items.append(_expand_path(argument))
    return [item for group in items for item in group]


def _expand_path(path):
    if os.path.isdir(path):
        images = find_images(path)
        return images or [InputError(path, "no image files found in this folder")]
    if not os.path.exists(path):
        return [InputError(path, "no such file or directory")]
    return [path]
