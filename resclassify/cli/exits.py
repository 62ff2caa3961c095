"""How a command ends, in one place: a library error is one line and exit 1, a usage error 2, more unreadable
inputs than --max-failures allows 3, --fail-under 1, a stop signal 128 + its number; main()'s last word."""

import contextlib
import functools
import os
import sys

import click

from ..errors import PreprocessingError, ResclassifyError
from ..render.terminal import degrade_for_terminal
from ..streams import GuardedStream

DEBUG_VARIABLE = "RESCLASSIFY_DEBUG"
# The shell's status for a command ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_STATUS = 130
# predict and eval finished, but more inputs could not be read than --max-failures allows: apart
# from 1 (an error that stopped the run, or --fail-under) and 2 (a usage error), so that a job
# controller can tell bad data, which a retry does not mend, from a crash.
UNREADABLE_STATUS = 3
# Signals that stop a run as Ctrl-C does: SIGTERM is what Slurm, Kubernetes and `kill` send, SIGHUP
# comes when the terminal or ssh session goes. The process ends with 128 + the signal's number.
STOP_SIGNAL_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM, SIGHUP) reached a command; main() ends the process with 128 + the signal."""


class _Stopping:
    """main()'s signal state: the stop signal that came first, and whether a record is being written."""

    signal = None
    command_running = False
    writing = 0  # records being written now (nested sections)
    pending = False  # a stop signal came while one was: raise once it is whole


def _on_stop_signal(number, frame):
    """The handler main() installs for STOP_SIGNAL_NAMES: the first signal stops the run as Ctrl-C
    does (a KeyboardInterrupt, so that every clean-up on the way out runs, the export child's and
    the decode workers' included); a second one, or one outside a command, ends the process now."""
    if _Stopping.signal is not None or not _Stopping.command_running:
        _flush_standard_streams()
        os._exit(128 + number)
    _Stopping.signal = number
    if _Stopping.writing:
        _Stopping.pending = True  # the record being written is finished first
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def whole_record():
    """Hold a stop signal until the block ends, so that a record is written whole (a JSON array
    element and its separator, a CSV row, a line) before the run stops."""
    _Stopping.writing += 1
    try:
        yield
    finally:
        _Stopping.writing -= 1
    if _Stopping.pending and not _Stopping.writing:
        _Stopping.pending = False
        raise KeyboardInterrupt


def _install_stop_handlers():
    import signal

    for name in STOP_SIGNAL_NAMES:
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(number, _on_stop_signal)


def debug_requested():
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


class CommandError(click.ClickException):
    """A ResclassifyError as Click shows it: one line on stderr, exit status 1."""

    def show(self, file=None):
        report_error(self.format_message())


def report_error(message):
    click.echo(f"resclassify: error: {message}", err=True)


def report_warning(message):
    click.echo(f"resclassify: warning: {message}", err=True)


def reports_errors(command):
    """Turn the library's errors into CommandError, unless RESCLASSIFY_DEBUG asks for the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PreprocessingError as exc:
            if debug_requested():
                raise
            raise preprocessing_usage_error(exc) from None
        except ResclassifyError as exc:
            if debug_requested():
                raise
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            # Not Click's "Aborted!" and status 1: main() ends the process with 130 at once.
            raise Interrupted() from None

    return wrapper


def preprocessing_usage_error(exc):
    """Preprocessing options that cannot work are a usage error (exit 2) naming the option at fault."""
    return click.BadParameter(str(exc), ctx=click.get_current_context(silent=True), param_hint=exc.option)


def failure_status(failed, total, max_failures, quiet, counted):
    """The exit status for `failed` of `total` inputs unreadable: 0, or UNREADABLE_STATUS beyond --max-failures;
    one line on stderr saying how many (unless quiet). counted: "inputs could not be classified", say."""
    if not failed:
        return 0
    within = max_failures is not None and max_failures.allows(failed, total)
    if not quiet:
        if max_failures is None:
            verdict = ""
        elif within:
            verdict = f" (within --max-failures {max_failures.text})"
        else:
            verdict = f", more than --max-failures {max_failures.text} allows"
        report_warning(f"{failed} of {total} {counted}{verdict}")
    return 0 if within else UNREADABLE_STATUS


def fail_under_status(report, fail_under):
    """1, with one line on stderr, when the report's top-1 accuracy is under --fail-under (or there is none); else 0."""
    top1 = report["accuracy"]["top1"]["accuracy_percent"]
    if fail_under is not None and (top1 is None or top1 < fail_under):
        shown = "n/a (no image evaluated)" if top1 is None else f"{top1:.2f}%"
        report_error(f"top-1 accuracy {shown} is below --fail-under {fail_under:g}%")
        return 1
    return 0


def run(group):
    """Run the command line's group as the console script does: no traceback reaches the user unless
    RESCLASSIFY_DEBUG=1; every way out becomes its exit status here."""
    # Every write to stdout, click.echo's included, names the stream when it fails (a full disk).
    # A terminal that is not UTF-8 gets what it can show: no UnicodeEncodeError, ever.
    degrade_for_terminal(sys.stdout, sys.stderr)
    original_stdout = sys.stdout
    stdout = sys.stdout = GuardedStream(original_stdout, "stdout")
    _install_stop_handlers()
    try:
        status = _run_command(group)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort as exc:
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            raise
        _end_interrupted()
    except (Interrupted, KeyboardInterrupt):
        _end_interrupted()
    except BrokenPipeError:
        # The reader (head, jq) went away: stop quietly, as other Unix tools do.
        stdout.failed = True
        sys.exit(1)
    except ResclassifyError as exc:  # from a command without reports_errors (an OutputError)
        if debug_requested():
            raise
        report_error(str(exc))
        sys.exit(1)
    except Exception as exc:
        if debug_requested():
            raise
        report_error(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_VARIABLE}=1 for the traceback)")
        sys.exit(1)
    finally:
        sys.stdout = original_stdout
        if stdout.failed:
            # Whatever stdout still holds cannot be written: drop it, so that Python's own flush
            # at exit does not add an "Exception ignored" trace to the error already shown.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, original_stdout.fileno())
    sys.exit(status if isinstance(status, int) else 0)


def _run_command(group):
    """The command line's command; a stop signal outside it (while an error is shown, say) ends the process at once."""
    _Stopping.command_running = True
    try:
        # Not standalone: Click would turn Ctrl-C into "Aborted!" and status 1.
        return group.main(prog_name="resclassify", standalone_mode=False)
    finally:
        _Stopping.command_running = False


def _end_interrupted():
    """Ctrl-C (SIGTERM, SIGHUP): end now with status 128 + the signal (130 for Ctrl-C), without
    waiting for a network batch or a decode still running on another thread. What was written is
    already whole: each record is written and flushed in one piece, record files were closed and
    the decode workers stopped on the way out."""
    _flush_standard_streams()
    os._exit(INTERRUPTED_STATUS if _Stopping.signal is None else 128 + _Stopping.signal)


def _flush_standard_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
