"""Tables for people: predict's results per image (rich), the weights list and info (aligned plain lines)."""

from ..streams import display_path
from .terminal import shown_in


def _cell(value, console):
    """A table cell as plain text: a label like "a[/b]" or "[background]" is never read as rich markup,
    and what the terminal cannot show is replaced before rich measures the column."""
    from rich.text import Text

    return Text(shown_in(value, console.encoding))


def plain_cells(console, *values):
    """A table row of plain-text cells (see _cell)."""
    return [_cell(value, console) for value in values]


class TableWriter:
    """A rich table per image, for people; errors are already on stderr, so they are skipped."""

    def __init__(self, stream, about=None, **context):
        from rich.console import Console

        # Colour only on a terminal (rich checks isatty and NO_COLOR); 80 columns when piped.
        self.console = Console(file=stream, highlight=False, soft_wrap=False,
                               width=None if stream.isatty() else 80)
        self.about = about

    def write(self, record):
        from rich.table import Table

        if "predictions" not in record:
            return
        if self.about:
            # Once, above the first table: which model and preprocessing produced what follows.
            self.console.print(shown_in(self.about, self.console.encoding), style="dim", markup=False,
                               soft_wrap=True)
            self.about = None
        with_wnids = any(p.get("wnid") for p in record["predictions"])
        # The path on a line of its own, never wrapped or padded, so it can be copied whole;
        # a newline or an undecodable byte in the name is shown escaped, on the same line.
        self.console.print(shown_in(display_path(record["path"]), self.console.encoding), style="bold",
                           markup=False, highlight=False, soft_wrap=True)
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("label", style="cyan")
        if with_wnids:
            table.add_column("WordNet id", style="dim")
        table.add_column("probability", justify="right", style="green")
        for p in record["predictions"]:
            wnid = [p["wnid"] or ""] if with_wnids else []
            table.add_row(*plain_cells(self.console, p["rank"], p["label"], *wnid, f"{p['probability'] * 100:.2f}%"))
        self.console.print(table)

    def close(self):
        pass


_CACHED_SHOWN = {"cached": "yes", "missing": "no", "damaged": "damaged (wrong md5)"}


class WeightsTableWriter:
    """The cache folder, then one aligned line per model; the path last, unpadded, so it copies whole.

    context: cache_folder, and approx_mib (model -> size in MiB shown for a file not yet here).
    """

    header = ("model", "file", "size", "md5", "cached", "path")

    def __init__(self, stream, cache_folder=None, approx_mib=None, **context):
        self.stream = stream
        self.cache_folder = cache_folder
        self.approx_mib = approx_mib or {}
        self.cells = [self.header]

    def write(self, row):
        if row["size"] is not None:
            size = f"{row['size'] / 2**20:.1f} MiB"
        else:
            size = f"~{self.approx_mib[row['model']]} MiB" if row["model"] in self.approx_mib else "?"
        self.cells.append((row["model"], row["file"], size, row["md5"], _CACHED_SHOWN[row["state"]], row["path"]))

    def close(self):
        # Widths need every row: a listing of a handful of models is written whole at the end.
        lines = [f"cache folder: {self.cache_folder}"] if self.cache_folder is not None else []
        widths = [max(len(line[i]) for line in self.cells) for i in range(len(self.header) - 1)]
        for line in self.cells:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()


class InfoTextWriter:
    """resclassify.about() as aligned lines: versions, the default backend, devices if listed, the cache."""

    def __init__(self, stream, **context):
        self.stream = stream

    def write(self, info):
        lines = [("resclassify", info["resclassify"]), ("python", info["python"]),
                 ("keras", info["keras"] or "not installed")]
        for name, backend in info["backends"].items():
            if not backend["installed"]:
                lines.append((name, f"not installed: {backend['install']}"))
                continue
            companions = [f"{key} {value}" for key, value in backend.items()
                          if key not in ("installed", "version", "devices", "install") and value]
            lines.append((name, (backend["version"] or "installed") +
                          (f" ({', '.join(companions)})" if companions else "")))
        lines.append(("onnxruntime", info["onnxruntime"] or "not installed"))
        default = info["default_backend"]
        lines.append(("backend", f"{default['name']} ({default['why']})" if default["name"] else default["why"]))
        listed = [(name, backend["devices"]) for name, backend in info["backends"].items() if "devices" in backend]
        for i, (name, devices) in enumerate(listed):
            shown = f"error: {devices['error']}" if isinstance(devices, dict) else ", ".join(devices) or "none"
            lines.append(("devices" if i == 0 else "", f"{name}: {shown}"))
        lines.append(("cache folder", info["cache_folder"]))
        if info.get("cache_problem"):
            lines.append(("cache problem", info["cache_problem"]))
        cached = info["cached_weights"]
        for i, row in enumerate(cached):
            about = f"{row['model']}, " if row["model"] else ""
            lines.append(("cached weights" if i == 0 else "", f"{row['file']} ({about}{row['size'] / 2**20:.1f} MiB)"))
        if not cached:
            lines.append(("cached weights", "none"))
        for i, row in enumerate(info.get("cached_onnx", ())):
            lines.append(("cached onnx" if i == 0 else "", f"{row['file']} ({row['size'] / 2**20:.1f} MiB)"))
        width = max(len(label) for label, _ in lines) + 2
        self.stream.write("".join(f"{label:<{width}}{text}\n" for label, text in lines))
        self.stream.flush()

    def close(self):
        pass
