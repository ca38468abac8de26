"""``summary.json`` of a ``selo-localise`` output folder: one folder, one truth.

The summary lists every output set in the folder (image x query), across runs, with the record of each of
its files (:mod:`predict.provenance`'s store), the query numbers and the stem of each image's output names.
"""
from __future__ import annotations

import json
import os
import re

from predict.core.notes import warn
from predict.errors import first_line
from predict.io.raster import feature_collection
from predict.provenance import (StoredFileError, digest_of, read_stored_json, remove_stored, seal_file, short,
                                stored_problem, write_stored_json)

SUMMARY_NAME = "summary.json"
ALL_PEAKS_NAME = "all_peaks.geojson"
SUMMARY_VERSION = 3  # 2: no records of the outputs; 1: the results of the last run only, numbered by its query list
SUMMARY_KEY = "selo-localise folder summary"  # the producer named in the summary's own record


class FolderSummary:
    """``summary.json`` of an output folder: the query numbers, the stem of each image's outputs and one
    entry per output set on disk, across runs, with the record of each of its files. A rerun of an image x
    query replaces its entry, and its files that the new entry does not list (``_regions`` of an earlier
    run with ``--regions``...) are removed, so no file on disk is left that the summary does not describe.

    The summary is a stored file (:func:`~predict.provenance.write_stored`): one edited by hand, or of
    another program, stops the run with one line. An entry whose file changed since it was written (edited,
    truncated, replaced) is dropped with its files, with a warning to ``notes`` naming the file. A summary
    of an earlier version is adopted, its files taken as they are.
    """

    def __init__(self, out_dir: str, notes: list[str] | None = None):
        self.path = os.path.join(out_dir, SUMMARY_NAME)
        self.out_dir = out_dir
        self.queries: list[str] = []
        self.results: list[dict] = []
        self.runs: list[dict] = []
        self.stems: dict[str, str] = {}  # absolute image path -> the stem of its output names
        self.all_peaks: dict | None = None  # the record of all_peaks.geojson as last written
        if os.path.isfile(self.path):
            self._load()
            self._drop_changed(notes)

    def _load(self) -> None:
        try:
            try:
                data = read_stored_json(self.path, SUMMARY_KEY)
            except StoredFileError as error:
                data = self._earlier_version(error)
            if data.get("version") == SUMMARY_VERSION:
                self.queries, self.results, self.runs = list(data["queries"]), list(data["results"]), list(data["runs"])
                self.stems = dict(data["stems"])
            elif data.get("version") == 2:
                self._adopt(data["results"], data["queries"])
            else:
                self._adopt_version_1(data["results"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.path}: not a summary selo-localise can continue ({first_line(exc)}); "
                             "move it away or use another --out") from None

    def _earlier_version(self, error: StoredFileError) -> dict:
        """A summary without a record: one of an earlier version (adopted), else ``error``."""
        with open(self.path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("version", 1) == SUMMARY_VERSION:
            raise ValueError(error.reason)
        return data

    def _adopt(self, results: list[dict], queries: list[str]) -> None:
        """An earlier version's entries, each with the records of its files as they are now."""
        self.queries = list(queries)
        for entry in results:
            image = os.path.abspath(entry["image"])
            self.stems.setdefault(image, entry["files"]["probmap"].rsplit("_q", 1)[0])
            key = digest_of(entry)
            records = {name: seal_file(os.path.join(self.out_dir, name), key, beside=False)
                       for name in entry["files"].values() if os.path.isfile(os.path.join(self.out_dir, name))}
            self.results.append({**entry, "image": image, "records": records})

    def _adopt_version_1(self, results: list[dict]) -> None:
        """The entries of the first version's summary (one run's, numbered by its query list)."""
        queries, entries = [], []
        for entry in results:
            k = int(re.fullmatch(r".*_q(\d+)_probmap\.tif", entry["probmap"]).group(1))
            queries += [""] * (k + 1 - len(queries))
            queries[k] = entry["query"]
            files = {kind: entry[kind] for kind in ("probmap", "overlay", "peaks", "regions") if kind in entry}
            entries.append({"image": entry["image"], "query": entry["query"], "k": k, "files": files})
        self._adopt(entries, queries)

    def _drop_changed(self, notes: list[str] | None) -> None:
        """Drop the entries one of whose files is not the one written (changed, missing, or without a record
        in the entry: never one found beside the file), with their files."""
        for entry in list(self.results):
            records = entry.get("records") if isinstance(entry.get("records"), dict) else {}
            for name in entry["files"].values():
                path = os.path.join(self.out_dir, name)
                problem = "no record of it" if name not in records else stored_problem(path, None, records[name])
                if problem:
                    warn(f"{path}: {problem}; the outputs of {entry['image']} x {entry['query']!r} are removed "
                         "(run it again to make them)", notes)
                    self._remove(entry)
                    break

    def _remove(self, entry: dict, keep: set[str] = frozenset()) -> None:
        """Remove ``entry`` and its files but ``keep``."""
        for name in set(entry["files"].values()) - keep:
            if os.path.basename(name) == name:  # a hand-edited summary never makes this remove a file elsewhere
                remove_stored(os.path.join(self.out_dir, name))
        self.results.remove(entry)

    def number(self, query: str) -> int:
        """The folder's number of ``query`` (a new one for a query never asked here)."""
        if query not in self.queries:
            self.queries.append(query)
        return self.queries.index(query)

    def stem(self, image: str) -> str:
        """The stem of the output names of ``image`` in this folder: its file's stem, unless another image
        of the folder has it; then the stem and a digest of its absolute path, so that outputs of different
        images never share a name, in one run or across runs.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     summary = FolderSummary(folder)
        ...     summary.stem("/a/scene.png"), summary.stem("/a/scene.tif")[:6], summary.stem("/a/scene.png")
        ('scene', 'scene-', 'scene')
        """
        path = os.path.abspath(image)
        if path not in self.stems:
            stem = os.path.splitext(os.path.basename(path))[0]
            self.stems[path] = f"{stem}-{short(digest_of(path))[:8]}" if stem in self.stems.values() else stem
        return self.stems[path]

    def record(self, entry: dict) -> None:
        """Add ``entry``, replacing the one of the same outputs and removing its files the new one lacks."""
        probmap = entry["files"]["probmap"]
        for old in [e for e in self.results if e["files"]["probmap"] == probmap]:
            self._remove(old, keep=set(entry["files"].values()))
        self.results.append(entry)

    def forget(self, image: str, query: str | None = None) -> None:
        """Remove the outputs of ``image`` (x ``query``, else every query): they no longer describe it."""
        path = os.path.abspath(image)
        for entry in [e for e in self.results if e["image"] == path and query in (None, e["query"])]:
            self._remove(entry)

    def forget_other_content(self, image: str, key: str, digest: str) -> list[str]:
        """Remove the outputs of ``image`` made from other content than the content key ``key`` (the file,
        its sidecars, the bands and the stretch as read now; an entry of an earlier version, which has none,
        by the file's ``digest``): they describe the image as it was, not as a fresh run finds it. Returns
        the queries whose outputs went."""
        path = os.path.abspath(image)
        gone = [e for e in self.results if e["image"] == path
                and (e["image_key"] != key if "image_key" in e else e.get("image_digest") != digest)]
        for entry in gone:
            self._remove(entry)
        return [entry["query"] for entry in gone]

    def write(self, run: dict) -> None:
        """Write the summary, ``run`` (this run's times and errors) after the earlier runs."""
        data = {"version": SUMMARY_VERSION, "queries": self.queries, "stems": self.stems, "results": self.results,
                "all_peaks": ALL_PEAKS_NAME, "all_peaks_record": self.all_peaks, "errors": run["errors"],
                "runs": self.runs + [run]}
        write_stored_json(self.path, data, SUMMARY_KEY)

    def write_all_peaks(self, notes: list[str] | None = None) -> None:
        """``all_peaks.geojson``: the peaks of every entry, one layer, each peaks file read verified; one that
        fails is left out, with a warning (to ``notes`` when given)."""
        features = []
        for entry in self.results:
            name = entry["files"]["peaks"]
            try:
                features += read_stored_json(os.path.join(self.out_dir, name), None, entry["records"][name])["features"]
            except (StoredFileError, ValueError, KeyError) as exc:
                warn(f"{name}: left out of {ALL_PEAKS_NAME} ({first_line(exc)})", notes)
        self.all_peaks = write_stored_json(os.path.join(self.out_dir, ALL_PEAKS_NAME), feature_collection(features),
                                           digest_of([entry["records"][entry["files"]["peaks"]] for entry in self.results]),
                                           beside=False)
