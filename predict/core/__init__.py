"""The SeLo pipeline core: pure functions of arrays (tiling, the per-cell mean and filters, the pipelines table)."""
