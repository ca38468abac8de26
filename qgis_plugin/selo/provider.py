"""The ``selo`` Processing provider: its algorithms and its one setting, ``SELO_BIN`` (stored by Processing
as ``Processing/Configuration/SELO_BIN``; the environment variable ``SELO_BIN`` overrides it)."""
from processing.core.ProcessingConfig import ProcessingConfig, Setting
from qgis.core import QgsProcessingProvider

from .algorithms import IndexAlgorithm, LocaliseAlgorithm, SearchAlgorithm
from .commands import SETTING


class SeloProvider(QgsProcessingProvider):
    def id(self):
        return "selo"

    def name(self):
        return "SeLo"

    def longName(self):  # noqa: N802 - the names Processing calls
        return "SeLo: semantic localization of text queries in remote-sensing scenes"

    def load(self):
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(self.name(), SETTING, "Environment of the selo commands: its bin folder "
                                            "(or its python)", "", valuetype=Setting.FOLDER))
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        ProcessingConfig.removeSetting(SETTING)

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in (LocaliseAlgorithm(), IndexAlgorithm(), SearchAlgorithm()):
            self.addAlgorithm(algorithm)
