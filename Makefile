# Everything installs into .venv; `make test` and `make demo` set it up themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo train-demo bench docs qgis-plugin qgis-screenshot clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir -r requirements.txt
	$(PY) -m pip install -q --no-cache-dir --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) predict/demo/run_demo.py

train-demo: $(STAMP)
	$(PY) predict/demo/train_demo_encoder.py

# The documentation site (docs/, mkdocs.yml), served on http://127.0.0.1:8000; `make test` builds it strictly.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve -a 127.0.0.1:8000

# The QGIS plugin (qgis_plugin/selo) as a zip for QGIS's Plugins > Install from ZIP; see docs/qgis.md.
QGIS_ZIP ?= dist/selo-qgis.zip
qgis-plugin:
	$(PYTHON) qgis_plugin/build_zip.py $(QGIS_ZIP)

# docs/images/qgis-desktop.png: QGIS desktop under Xvfb (apt: qgis python3-qgis xvfb) with a scene, its probmap and peaks.
qgis-screenshot: $(STAMP)
	$(PY) qgis_plugin/make_screenshot.py docs/images/qgis-desktop.png

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) cache/demo
