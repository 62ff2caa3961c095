"""Progress bars the command line draws on stderr: eval's images, the weights download."""

import time


class EvalProgress:
    """A rich progress bar on stream (images done, images/s, time left), or nothing when disabled.

    Lines printed through line() go above the bar while it shows, so errors do not tear it.
    """

    def __init__(self, total, stream, enabled):
        self.stream = stream
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("images"), TaskProgressColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                     console=Console(file=stream, highlight=False), transient=True)
            self.started = time.perf_counter()
            self.task = self.progress.add_task("evaluating", total=total, rate="")

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc_info):
        if self.progress is not None:
            self.progress.stop()

    def advance(self):
        if self.progress is not None:
            done = self.progress.tasks[0].completed + 1
            elapsed = time.perf_counter() - self.started
            rate = f"{done / elapsed:.1f} img/s" if elapsed > 0 else ""
            self.progress.update(self.task, advance=1, rate=rate)

    def line(self, text):
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


class DownloadProgress:
    """Draws the download progress the library reports (progress(file_name, bytes_done, bytes_total))
    as a rich bar on stream: bytes, speed, time left; one line per file; nothing when disabled."""

    def __init__(self, stream, enabled):
        self.stream = stream
        self.enabled = enabled
        self.progress = None
        self.tasks = {}

    def __call__(self, name, done, total):
        if not self.enabled:
            return
        if self.progress is None:
            from rich.console import Console
            from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self.progress = Progress(*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn(),
                                     TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self.progress.start()
        if name not in self.tasks:
            from rich.markup import escape

            # The description is rich markup: a file name is escaped, so that it shows as it is.
            self.tasks[name] = self.progress.add_task(f"downloading {escape(name)}", total=total)
        self.progress.update(self.tasks[name], completed=done, total=total)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        # Gone before anything else is printed: the next line (a result, an error) starts clean.
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks = {}
