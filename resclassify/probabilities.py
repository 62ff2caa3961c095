"""--probabilities-out: every input's full probabilities in a .npy file written row by row, and its sidecar of paths."""

from .streams import escape_path

PATHS_SUFFIX = ".paths.txt"


def paths_file(probabilities_path):
    """The sidecar naming the rows of a --probabilities-out file: FILE.npy -> FILE.npy.paths.txt."""
    return str(probabilities_path) + PATHS_SUFFIX


class ProbabilitiesWriter:
    """An N x classes float32 .npy file written row by row through a memory map, and its sidecar of paths.

    numpy.lib.format.open_memmap makes the file (np.load reads it, with mmap_mode="r" too), then
    only a window of rows is mapped at a time (flushed and unmapped when full), so a run of
    50,000 images never holds its 200 MB of probabilities in memory. Row k is the k-th input in
    output order; an input that could not be read gets a row of NaN. Rows a run never reached
    (cut short) stay 0, which no probability row is.
    """

    WINDOW_BYTES = 4 * 2**20

    def __init__(self, path, rows, classes, force=False):
        import numpy as np

        self.path = str(path)
        self.rows, self.classes = rows, classes
        # Created here, exclusively unless forced: a file that appeared since the check is kept.
        self.paths = open(paths_file(path), "w" if force else "x", encoding="utf-8", errors="surrogateescape",
                          newline="\n")
        if not force:
            open(self.path, "xb").close()
        # numpy's own .npy layout, the file at its full size (sparse until rows are written); this
        # mapping of the whole file is dropped at once, before any row is touched.
        whole = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(rows, classes))
        self.offset = whole.offset
        del whole
        self.window_rows = max(1, self.WINDOW_BYTES // (4 * max(1, classes)))
        self.window = None
        self.window_start = 0
        self.written = 0

    def write(self, path, probabilities):
        import numpy as np

        if self.written >= self.rows:
            raise ValueError(f"{self.path}: more rows than the {self.rows} announced")
        if self.window is None or self.written >= self.window_start + len(self.window):
            self._next_window()
        row = self.window[self.written - self.window_start]
        row[:] = np.nan if probabilities is None else probabilities
        self.paths.write(escape_path(path) + "\n")
        self.written += 1

    def _next_window(self):
        import numpy as np

        self._release_window()
        self.window_start = self.written
        count = min(self.window_rows, self.rows - self.written)
        self.window = np.memmap(self.path, dtype=np.float32, mode="r+", shape=(count, self.classes),
                                offset=self.offset + 4 * self.classes * self.window_start)

    def _release_window(self):
        if self.window is not None:
            self.window.flush()
            self.window = None

    def close(self):
        self._release_window()
        self.paths.close()


def open_probabilities_writer(path, rows, classes, force=False):
    return ProbabilitiesWriter(path, rows, classes, force)
