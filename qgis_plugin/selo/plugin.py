"""The plugin QGIS loads: it registers the SeLo Processing provider (nothing else: no menu, no toolbar)."""
from qgis.core import QgsApplication

from .provider import SeloProvider


class SeloPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 - the names QGIS calls; qgis_process calls this one only
        self.provider = SeloProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        QgsApplication.processingRegistry().removeProvider(self.provider)
