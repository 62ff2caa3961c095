"""What a command's arguments name, wherever it lives: local files and folders, stdin lists, URLs and bucket
prefixes (listed once), tar shards (indexed): predict's inputs, and eval's labelled images. The one place an
argument is told apart; local, remote and tars each read their own kind."""

import os

from ..errors import InputError
from .ground_truth import find_folder_ground_truth
from .local import expand_local_path
from .remote import RemoteImage, check_buckets, expand_url, is_url
from .tars import expand_shard_names, expand_shards, find_tar_ground_truth, names_tar_shards, part_of_shards, \
    shard_names


def expand_inputs(inputs, stdin=None, on_skip=None, lister=None, shard=None):
    """The command's INPUT arguments as a list of inputs (image paths, RemoteImages), with an InputError in place
    of each bad one.

    A folder becomes its images (walk_images; on_skip(Skipped) hears of each entry not followed);
    tar shards (shards/val-{000000..000009}.tar, a glob, a .tar path or URL) their image members (sources.tars);
    "-" becomes the paths listed on stdin, one a line (stdin may give bytes, as file names are);
    a line starting with ~ or ~user is expanded as a shell expands such an argument. A URL prefix is listed
    once, by lister (sources.listing.PrefixListings.images; sources.remote.list_images unless given).
    shard (sources.shards.Shard), if given, keeps its part: of the sorted inputs, or, when every argument names
    tar shards, of the sorted shards, split whole before they are indexed (so that each task of an array reads
    only its own shards).
    """
    if shard is not None and inputs and all(_names_tar_shards(argument) for argument in inputs):
        names = part_of_shards([name for argument in inputs for name in shard_names(argument)], shard)
        return expand_shard_names(names, on_skip)
    items, urls = [], []
    for argument in inputs:
        if argument == "-":
            lines = [os.fsdecode(line).rstrip("\r\n") for line in (stdin if stdin is not None else [])]
            paths = [os.path.expanduser(line) for line in lines if line.strip()]
            if not paths:
                items.append([InputError("-", "no paths on stdin")])
            items.extend(_expand_argument(path, on_skip, lister) for path in paths)
            urls.extend(path for path in paths if is_url(path))
        else:
            items.append(_expand_argument(argument, on_skip, lister))
            if is_url(argument):
                urls.append(argument)
    # A missing bucket or refused credentials stop the run here, once, not as an error per object.
    check_buckets(urls)
    items = [item for group in items for item in group]
    return items if shard is None else shard.take(items, key=input_path)


def input_path(item):
    """The path of an item of expand_inputs' list: an image path, a RemoteImage or an InputError."""
    return item.path if isinstance(item, (InputError, RemoteImage)) else item


def _names_tar_shards(argument):
    return argument != "-" and names_tar_shards(argument) and not os.path.isdir(argument)


def _expand_argument(path, on_skip, lister=None):
    if _names_tar_shards(path):
        return expand_shards(path, on_skip)
    if is_url(path):
        return expand_url(path, lister)
    return expand_local_path(path, on_skip)


def find_ground_truth(folder, labels_file=None, real_labels_file=None, classes=None, lister=None, shard=None):
    """Work out the true class of every image under folder; raise DatasetError when it cannot be.

    Without labels_file the folder must hold class folders (WordNet ids, Keras labels or
    indices); with it, the labels file is read by its content (CSV/TSV with a header, Kaggle's
    LOC_val_solution.csv, or the ILSVRC2012 devkit's validation ground truth).
    folder may be a URL prefix (s3://bucket/val/): listed once (lister, see ground_truth.list_folder), its
    class folders are the first part of the keys under it; labels files may be URLs too. folder
    may name tar shards instead (sources.tars.find_tar_ground_truth: labels from siblings); shard, if given, then
    keeps its part of the shards before they are indexed (the GroundTruth's shard_taken; a folder ignores it).
    """
    if _names_tar_shards(str(folder)):
        return find_tar_ground_truth(str(folder), labels_file, real_labels_file, classes, shard)
    return find_folder_ground_truth(folder, labels_file, real_labels_file, classes, lister)
