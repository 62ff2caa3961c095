"""Text that leaves for people: tables, the eval summary, the HTML report, progress bars, the table of outputs."""
