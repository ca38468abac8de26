"""QGIS desktop with a scene, its SeLo probmap and its peaks, as the plugin loads them, saved as a PNG: run
by QGIS itself (``qgis --code``) under Xvfb with ``SELO_BIN`` set (the plugin is enabled if it is not);
``make qgis-screenshot`` runs it (``qgis_plugin/make_screenshot.py``).

``selo:localise`` runs through Processing as the toolbox runs it (its layers loaded, named and styled by the
plugin); the main window is saved to ``SELO_SHOT`` once the map is drawn, then QGIS quits. The scene is
``SELO_SCENE``, the query ``SELO_QUERY``, the output folder ``SELO_OUT``.
"""
import os

import processing
from qgis import utils
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface

SHOT_DELAY_MS = 8000  # after the run: the canvas, the labels and the legend drawn (a fixed wait: under Xvfb the
# canvas's refreshed signal may come before the labels)


def save_and_quit():
    iface.mainWindow().grab().save(os.environ["SELO_SHOT"])
    print("layers:", [layer.name() for layer in QgsProject.instance().layerTreeRoot().layerOrder()], flush=True)
    os._exit(0)  # not QgsApplication.exit: QGIS 3.22 crashes in its own teardown under Xvfb (signal 11)


def show():
    scene = QgsRasterLayer(os.environ["SELO_SCENE"], os.path.basename(os.environ["SELO_SCENE"]))
    QgsProject.instance().addMapLayer(scene)
    QgsProject.instance().setCrs(scene.crs())  # the scene's CRS: nothing is reprojected but the WGS84 peaks
    try:
        processing.runAndLoadResults("selo:localise", {"INPUT": scene, "QUERIES": os.environ["SELO_QUERY"],
                                                       "ENCODER": "demo", "OUTPUT_FOLDER": os.environ["SELO_OUT"]})
    except Exception as error:  # noqa: BLE001 - reported, and QGIS still quits
        print("selo:localise failed:", error, flush=True)
    finally:
        iface.mapCanvas().setExtent(scene.extent())
        iface.mapCanvas().refresh()
        QTimer.singleShot(SHOT_DELAY_MS, save_and_quit)


if "selo" not in utils.active_plugins:  # found on QGIS_PLUGINPATH, not yet enabled in this profile
    utils.loadPlugin("selo")
    utils.startPlugin("selo")
window = iface.mainWindow()
window.setGeometry(0, 0, 1600, 1000)  # no window manager under Xvfb to maximise it
window.findChild(QDockWidget, "Browser").hide()  # the layers panel gets the column, wide enough for the names
window.resizeDocks([window.findChild(QDockWidget, "Layers")], [430], Qt.Horizontal)
QTimer.singleShot(1000, show)  # once the main window is up
