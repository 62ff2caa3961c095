"""Bucket prefixes listed once per run, and saved beside the run's record file (FILE.listing.json), so that
--resume (and a resumed shard) runs over exactly the inputs the first run listed, without listing again."""

import json
import os

from ..errors import RecordFileError
from ..files import write_atomically
from . import remote

LISTING_SUFFIX = ".listing.json"
LISTING_VERSION = 1


def listing_path(record_file):
    """Where a record file's saved listing lives: FILE.listing.json beside it."""
    return f"{os.fspath(record_file)}{LISTING_SUFFIX}"


class PrefixListings:
    """Lists each prefix a run names once: from the listing an earlier run of the same arguments saved (saved,
    {prefix URL: sorted image URLs}) where it has one, else from the store."""

    def __init__(self, command, arguments, saved=None):
        self.command = command
        self.arguments = [os.fspath(argument) for argument in arguments]
        self.saved = dict(saved or {})
        self.listed = {}  # prefix -> image URLs, for every prefix this run asked for
        self.from_store = set()  # the prefixes of listed that the store was asked for (not saved earlier)

    def images(self, url):
        """The sorted image URLs under the prefix url (sources.remote.list_images), each prefix listed at most once."""
        if url not in self.listed:
            if url in self.saved:
                self.listed[url] = list(self.saved[url])
            else:
                self.listed[url] = remote.list_images(url)
                self.from_store.add(url)
        return self.listed[url]

    def save(self, record_file):
        """Write what this run listed beside record_file, atomically, before its first record; where nothing was
        listed, remove a listing an earlier run (started over) left there. Unchanged when every prefix came from
        the saved listing."""
        path = listing_path(record_file)
        if not self.listed:
            if os.path.exists(path):
                os.unlink(path)
            return
        if not self.from_store and os.path.exists(path):
            return
        document = {"version": LISTING_VERSION, "command": self.command, "arguments": self.arguments,
                    "prefixes": self.listed}
        write_atomically(path, json.dumps(document, indent=1) + "\n")


def saved_listings(record_file, command, arguments):
    """PrefixListings for a --resume of record_file: holding what the earlier run saved beside it (nothing if it saved
    nothing). RecordFileError where that listing came from other arguments, or cannot be read: the run would
    not continue the same inputs."""
    listings = PrefixListings(command, arguments)
    path = listing_path(record_file)
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except FileNotFoundError:
        return listings
    except OSError as exc:
        raise RecordFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordFileError(f"{path}: not a saved listing (JSON): {exc}") from None
    prefixes = document.get("prefixes") if isinstance(document, dict) else None
    if not isinstance(prefixes, dict) or not all(
            isinstance(urls, list) and all(isinstance(url, str) for url in urls) for urls in prefixes.values()):
        raise RecordFileError(f"{path}: not a saved listing (no prefixes with their image URLs)")
    if document.get("command") != command or document.get("arguments") != listings.arguments:
        raise RecordFileError(f"{path}: the run being resumed listed {' '.join(document.get('arguments') or [])!r} "
                              f"({document.get('command')}), not {' '.join(listings.arguments)!r}; resume with the "
                              "same arguments, or pass --force instead of --resume to start over")
    listings.saved = prefixes
    return listings
