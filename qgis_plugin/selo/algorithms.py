"""The algorithms ``selo:localise``, ``selo:index`` and ``selo:search``: each builds its command's arguments,
runs it (:mod:`.commands`) and loads what it wrote (:mod:`.outputs`), styled (:mod:`.layers`)."""
from __future__ import annotations

import os

from processing.core.ProcessingConfig import ProcessingConfig
from qgis.core import (QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingOutputFile, QgsProcessingOutputMultipleLayers, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingUtils)

from .commands import SETTING, CommandError, find_command, run_command, selo_bin
from .layers import LayerStyler
from .outputs import distinct_queries, layer_name, localise_outputs, search_outputs

PIPELINES = ("v1", "v2")
STYLERS: list[LayerStyler] = []  # Processing calls them after the run: they must outlive it
LAYER_OUTPUTS = {"probmap": ("PROBMAPS", "Probability maps"), "peaks": ("PEAKS", "Peaks"), "mask": ("MASKS", "Masks"),
                 "regions": ("REGIONS", "Regions"), "hits": ("HITS", "Hits: the top scenes of each query")}


class SeloAlgorithm(QgsProcessingAlgorithm):
    """What the three algorithms share: the command found through ``SELO_BIN`` and run, the outputs loaded."""

    command = ""  # the selo command this algorithm runs
    layer_outputs: tuple[str, ...] = ()  # its outputs of layers (see LAYER_OUTPUTS)

    def createInstance(self):  # noqa: N802 - the names Processing calls
        return type(self)()

    def displayName(self):  # noqa: N802
        return self.name().capitalize()

    def run_selo(self, arguments: list[str], feedback) -> None:
        """Run this algorithm's command with ``arguments``; a failure is the command's one line."""
        try:
            code = run_command([find_command(self.command, selo_bin(ProcessingConfig.getSetting(SETTING))),
                                *arguments], feedback)
        except CommandError as error:
            raise QgsProcessingException(str(error)) from None
        if code:
            feedback.reportError(f"{self.command}: some inputs failed (see the log above); the others are loaded")

    def load_outputs(self, outputs, context: QgsProcessingContext, several_images: bool) -> dict:
        """Each of ``outputs`` loaded into the project when the algorithm ends, named and styled; the
        algorithm's layer outputs (``PROBMAPS``, ``PEAKS``...: their files)."""
        results = {name: [] for name in self.layer_outputs}
        for output in outputs:
            name = layer_name(output, several_images)
            hint = QgsProcessingUtils.LayerHint.Raster if output.is_raster else QgsProcessingUtils.LayerHint.Vector
            details = QgsProcessingContext.LayerDetails(name, context.project(), name, hint)
            STYLERS.append(LayerStyler(output, name))
            details.setPostProcessor(STYLERS[-1])
            context.addLayerToLoadOnCompletion(output.path, details)
            results[LAYER_OUTPUTS[output.kind][0]].append(output.path)
        return results

    def add_layer_outputs(self) -> None:
        for name, description in LAYER_OUTPUTS.values():
            if name in self.layer_outputs:
                self.addOutput(QgsProcessingOutputMultipleLayers(name, description))

    def add_encoder_parameters(self) -> None:
        """ENCODER, PIPELINE, STEPS and BANDS, as ``selo-localise`` and ``selo-index`` take them."""
        self.addParameter(QgsProcessingParameterString("ENCODER", "Encoder: a preset's name (demo, clip...) or an "
                                                       "encoder's yaml file", defaultValue="demo"))
        self.addParameter(QgsProcessingParameterEnum("PIPELINE", "Pipeline", options=list(PIPELINES), defaultValue=0))
        self.addParameter(QgsProcessingParameterString("STEPS", "Tile steps joined by '_', e.g. 256_512_768 "
                                                       "(empty: the pipeline's)", optional=True))
        self.addParameter(QgsProcessingParameterString("BANDS", "Bands: one (gray) or three (R,G,B), 1-based, e.g. "
                                                       "4,3,2 (empty: the file's RGB)", optional=True))

    def encoder_arguments(self, parameters, context) -> list[str]:
        arguments = ["--yaml_path", self.parameterAsString(parameters, "ENCODER", context).strip() or "demo",
                     "--pipeline", PIPELINES[self.parameterAsEnum(parameters, "PIPELINE", context)]]
        for name, flag in (("STEPS", "--step"), ("BANDS", "--bands")):
            value = self.parameterAsString(parameters, name, context).strip()
            if value:
                arguments += [flag, value]
        return arguments

    def queries(self, parameters, context) -> list[str]:
        queries = distinct_queries(self.parameterAsString(parameters, "QUERIES", context))
        if not queries:
            raise QgsProcessingException("QUERIES: no query; give one text query per line")
        return queries


def optional_number(parameters: dict, name: str) -> float | None:
    """An optional number parameter's value; None when left empty."""
    value = parameters.get(name)
    return None if value is None or value == "" else float(value)


class LocaliseAlgorithm(SeloAlgorithm):
    command = "selo-localise"
    layer_outputs = ("PROBMAPS", "PEAKS", "MASKS", "REGIONS")

    def name(self):
        return "localise"

    def shortHelpString(self):  # noqa: N802
        return ("Where in the scene is each query? Runs selo-localise (set SELO_BIN: the bin folder of the "
                "environment where selo is installed) and loads, per query, the probability map (a pseudocolour "
                "ramp), its peaks (labelled with rank and score) and, when asked, the mask and the regions above "
                "a quantile of the map, in the scene's CRS. QUERIES: one per line. The output folder keeps its "
                "tile vectors: a later query on the same scene encodes no tile again. Cancel stops the command as "
                "Ctrl-C does: what it wrote is whole, and running it again resumes.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Scene (a raster layer or file)"))
        self.addParameter(QgsProcessingParameterString("QUERIES", "Queries, one per line", multiLine=True))
        self.add_encoder_parameters()
        for name, what in (("MASK", "mask"), ("REGIONS", "regions")):
            self.addParameter(QgsProcessingParameterNumber(
                name, f"Also write the {what} of the map above this quantile (e.g. 0.95; empty: none)",
                QgsProcessingParameterNumber.Double, optional=True, minValue=0, maxValue=0.999))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))
        self.add_layer_outputs()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        scene = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if scene is None or not os.path.isfile(scene.source()):
            raise QgsProcessingException("INPUT: not a raster file (selo-localise reads GeoTIFF, PNG or JPEG files)")
        image, queries = os.path.abspath(scene.source()), self.queries(parameters, context)
        folder = self.parameterAsString(parameters, "OUTPUT_FOLDER", context)
        arguments = ["--image", image, "--out", folder, *self.encoder_arguments(parameters, context),
                     *[f"--query={query}" for query in queries]]
        for name in ("MASK", "REGIONS"):
            quantile = optional_number(parameters, name)
            if quantile is not None:
                arguments += [f"--{name.lower()}", repr(quantile)]
        self.run_selo(arguments, feedback)
        return {"OUTPUT_FOLDER": folder,
                **self.load_outputs(localise_outputs(folder, [image], queries), context, several_images=False)}


class IndexAlgorithm(SeloAlgorithm):
    command = "selo-index"

    def name(self):
        return "index"

    def shortHelpString(self):  # noqa: N802
        return ("Indexes a folder of scenes into an archive for selo:search: every scene's tile vectors computed "
                "once (selo-index, on a local Ray). A rerun keeps the scenes already indexed and indexes new or "
                "changed ones; Cancel stops it as Ctrl-C does and a rerun resumes.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INPUT", "Folder of scenes",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.add_encoder_parameters()
        self.addParameter(QgsProcessingParameterFolderDestination("ARCHIVE", "Archive folder"))
        self.addOutput(QgsProcessingOutputFile("INDEX", "The archive's index.json"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        scenes = self.parameterAsFile(parameters, "INPUT", context)
        archive = self.parameterAsString(parameters, "ARCHIVE", context)
        self.run_selo(["--images", scenes, "--archive", archive, *self.encoder_arguments(parameters, context)], feedback)
        return {"ARCHIVE": archive, "INDEX": os.path.join(archive, "index.json")}


class SearchAlgorithm(SeloAlgorithm):
    command = "selo-search"
    layer_outputs = ("HITS", "PROBMAPS", "PEAKS")

    def name(self):
        return "search"

    def shortHelpString(self):  # noqa: N802
        return ("Which scenes of an archive (made by selo:index) hold each query, and where? Runs selo-search and "
                "loads, per query, its hits (one point per top scene at its best peak, labelled with rank and "
                "scene) and the probability map and peaks of each top scene.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("ARCHIVE", "Archive folder (made by selo:index)",
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString("QUERIES", "Queries, one per line", multiLine=True))
        self.addParameter(QgsProcessingParameterNumber("TOP", "Scenes mapped per query",
                                                       QgsProcessingParameterNumber.Integer, defaultValue=5, minValue=1))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))
        self.add_layer_outputs()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        queries = self.queries(parameters, context)
        folder = self.parameterAsString(parameters, "OUTPUT_FOLDER", context)
        self.run_selo(["--archive", self.parameterAsFile(parameters, "ARCHIVE", context), "--out", folder,
                  "--top", str(self.parameterAsInt(parameters, "TOP", context)),
                  *[f"--query={query}" for query in queries]], feedback)
        return {"OUTPUT_FOLDER": folder, **self.load_outputs(search_outputs(folder, queries), context, several_images=True)}
