"""The outputs as layers ready to read: the probmap a pseudocolour ramp with its legend, peaks labelled with
rank and score, regions outlined, hits labelled with rank and scene; each named ``SeLo: <query>`` and
carrying the query and what made it in its metadata. Layers keep their files' CRS (the probmap and mask the
scene's; GeoJSON is WGS84 by RFC 7946, drawn on the fly over the scene): nothing is reprojected."""
from __future__ import annotations

from qgis.core import (QgsColorRampLegendNodeSettings, QgsColorRampShader, QgsFillSymbol, QgsLayerMetadata,
                       QgsMarkerSymbol, QgsPalLayerSettings, QgsProcessingLayerPostProcessorInterface, QgsRasterLayer,
                       QgsRasterShader, QgsSingleBandPseudoColorRenderer, QgsSingleSymbolRenderer,
                       QgsTextBufferSettings, QgsTextFormat, QgsVectorLayer, QgsVectorLayerSimpleLabeling)
from qgis.PyQt.QtGui import QColor, QFont

from .outputs import Output

# The overlay's JET colours (probability 0 -> 1), so that the probmap in QGIS reads as the overlay.jpg does
RAMP = ((0.0, "#00007f"), (0.125, "#0000ff"), (0.375, "#00ffff"), (0.625, "#ffff00"), (0.875, "#ff0000"),
        (1.0, "#7f0000"))
PROBMAP_OPACITY = 0.65  # the scene shows through
PEAKS_LABEL = "concat('#', \"rank\", '  ', format_number(\"score\", 2))"
HITS_LABEL = "concat('#', \"rank\", ' ', base_file_name(\"scene\"))"


def style_probmap(layer: QgsRasterLayer) -> None:
    """Band 1 (0-255: probability x 255) as the JET ramp, its legend labelled in probabilities."""
    ramp = QgsColorRampShader(0, 255)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(255 * p, QColor(colour), f"{p:.2f}")
                               for p, colour in RAMP])
    legend = QgsColorRampLegendNodeSettings()  # the ramp in the legend, read as probabilities
    legend.setMinimumLabel("0: least likely")
    legend.setMaximumLabel("1: most likely")
    ramp.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0)
    renderer.setClassificationMax(255)
    renderer.setOpacity(PROBMAP_OPACITY)
    layer.setRenderer(renderer)


def labelled(layer: QgsVectorLayer, expression: str) -> None:
    """Each feature labelled with ``expression``, in bold on a white buffer."""
    text = QgsTextFormat()
    text.setFont(QFont("Sans", 10, QFont.Bold))
    text.setSize(10)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1)
    text.setBuffer(buffer)
    settings = QgsPalLayerSettings()
    settings.fieldName = expression
    settings.isExpression = True
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)


def style_points(layer: QgsVectorLayer, colour: str, expression: str) -> None:
    symbol = QgsMarkerSymbol.createSimple({"name": "circle", "color": colour, "outline_color": "white",
                                           "outline_width": "0.6", "size": "3.6"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    labelled(layer, expression)


def style_regions(layer: QgsVectorLayer) -> None:
    """Outlines only: the map beneath stays visible."""
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": "#ff00ff", "outline_width": "0.8"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def describe(layer, output: Output) -> None:
    """The query and what made the layer, in its metadata (Layer Properties > Metadata) and properties."""
    facts = {"query": output.query, "image": output.image, **output.provenance}
    metadata = QgsLayerMetadata(layer.metadata())
    metadata.setTitle(layer.name())
    metadata.setAbstract("\n".join(f"{name}: {value}" for name, value in facts.items() if value is not None))
    metadata.addKeywords("SeLo", [str(facts[name]) for name in ("query", "encoder", "pipeline") if facts.get(name)])
    layer.setMetadata(metadata)
    for name, value in facts.items():
        layer.setCustomProperty(f"selo/{name}", "" if value is None else str(value))


def style_layer(layer, output: Output) -> None:
    """``layer`` of ``output`` styled by its kind and described."""
    if output.kind == "probmap":
        style_probmap(layer)
    elif output.kind == "peaks":
        style_points(layer, "#e31a1c", PEAKS_LABEL)
    elif output.kind == "hits":
        style_points(layer, "#ff7f00", HITS_LABEL)
    elif output.kind == "regions":
        style_regions(layer)
    describe(layer, output)
    layer.triggerRepaint()


def open_layer(output: Output, name: str):
    """A layer of ``output``'s file, styled (for a script or a project; Processing loads its own)."""
    layer = QgsRasterLayer(output.path, name) if output.is_raster else QgsVectorLayer(output.path, name, "ogr")
    if not layer.isValid():
        raise ValueError(f"{output.path}: QGIS cannot open it")
    style_layer(layer, output)
    return layer


class LayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a layer Processing loads when the algorithm ends (Processing calls it in the main thread)."""

    def __init__(self, output: Output, name: str):
        super().__init__()
        self.output = output
        self.name = name

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - the name Processing calls
        layer.setName(self.name)
        style_layer(layer, self.output)
