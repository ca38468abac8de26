"""Runs compared as a paper does (``selo-compare``): paired statistics over the same samples, refusing what
is not comparable, as tables and a page.

Private modules: ``runs`` (loading, matching and the statistics), ``report`` (the tables and ``compare.html``).
"""
from predict.compare.report import FORMATS, render_table, write_outputs
from predict.compare.runs import DEFAULT_RESAMPLES, CompareError, compare_runs, load_run

__all__ = ["FORMATS", "render_table", "write_outputs", "DEFAULT_RESAMPLES", "CompareError", "compare_runs", "load_run"]
