"""What a command wrote, read from the ``summary.json`` it leaves in its output folder (plain Python): the
layers to load, each with its file, its kind and what made it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class Output:
    """One file to load: ``kind`` (``probmap``, ``peaks``, ``regions``, ``mask``, ``hits``), its ``path``,
    the ``query``, the ``image`` it maps (None for a query's hits across scenes) and ``provenance`` (encoder,
    pipeline...: what the layer's metadata names)."""

    kind: str
    path: str
    query: str
    image: str | None
    provenance: dict

    @property
    def is_raster(self) -> bool:
        return self.kind in ("probmap", "mask")


def distinct_queries(text: str) -> list[str]:
    """The queries of a text, one per line, as the commands number them: stripped, blank lines skipped,
    each once in the order given.

    >>> distinct_queries("a red roof\\n\\n a river \\na red roof")
    ['a red roof', 'a river']
    """
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def read_summary(folder: str) -> dict:
    path = os.path.join(folder, SUMMARY_NAME)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def localise_outputs(folder: str, images: list[str], queries: list[str]) -> list[Output]:
    """The outputs ``selo-localise`` lists in ``folder`` for ``images`` x ``queries`` (the folder may hold
    others, of earlier runs), probmaps first, then masks, regions and peaks (drawn in that order, peaks on
    top)."""
    wanted_images, wanted_queries = {os.path.abspath(image) for image in images}, set(queries)
    found = []
    for entry in read_summary(folder)["results"]:
        if entry["image"] in wanted_images and entry["query"] in wanted_queries:
            provenance = {name: entry.get(name) for name in ("encoder", "pipeline", "steps", "scene_score")}
            found += [Output(kind, os.path.join(folder, entry["files"][kind]), entry["query"], entry["image"], provenance)
                      for kind in ("probmap", "mask", "regions", "peaks") if kind in entry["files"]]
    order = {"probmap": 0, "mask": 1, "regions": 2, "peaks": 3}
    return sorted(found, key=lambda output: order[output.kind])


def search_outputs(folder: str, queries: list[str]) -> list[Output]:
    """The outputs of the search ``selo-search`` wrote into ``folder`` for ``queries`` (as
    :func:`distinct_queries` gives them): each top scene's probmap and peaks, then each query's hits."""
    summary = read_summary(folder)
    found = []
    for entry in summary["results"]:
        provenance = {"rank": entry["rank"], "scene_score": entry["scene_score"]}
        found += [Output(kind, os.path.join(folder, entry[kind]), entry["query"], entry["scene"], provenance)
                  for kind in ("probmap", "peaks")]
    for k, query in enumerate(queries):
        name = f"hits_q{k}.geojson"
        if name in summary["files"]:
            found.append(Output("hits", os.path.join(folder, name), query, None, {}))
    return found


def layer_name(output: Output, several_images: bool) -> str:
    """``SeLo: <query>``, with the image's name when the run mapped several, and the kind of layer but for
    the probmap.

    >>> layer_name(Output("peaks", "/o/a_q0_peaks.geojson", "a river", "/s/a.tif", {}), True)
    'SeLo: a river (a.tif, peaks)'
    >>> layer_name(Output("probmap", "/o/a_q0_probmap.tif", "a river", "/s/a.tif", {}), False)
    'SeLo: a river'
    """
    details = [os.path.basename(output.image)] if several_images and output.image else []
    details += [] if output.kind == "probmap" else [output.kind]
    return f"SeLo: {output.query}" + (f" ({', '.join(details)})" if details else "")
