"""SeLo in QGIS: a Processing provider whose algorithms run the installed commands (``selo-localise``,
``selo-index``, ``selo-search``) in a subprocess, so that QGIS's own Python never imports torch."""


def classFactory(iface):  # noqa: N802 - the name QGIS calls
    from .plugin import SeloPlugin  # QGIS only: the command runner imports without it

    return SeloPlugin(iface)
