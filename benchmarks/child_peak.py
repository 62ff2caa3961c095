"""A resclassify command line for a child process that reports its own peak resident memory (VmHWM) on stderr
as it exits ("peak-kib N"): a forked child's ru_maxrss would count the parent's pages from before exec."""

CLI_WITH_PEAK = """
import atexit, sys
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("peak-kib " + line.split()[1] + "\\n")
atexit.register(report)
from resclassify.cli import main
sys.argv = ["resclassify"] + sys.argv[1:]
main()
"""
