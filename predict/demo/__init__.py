"""Demo tooling: synthetic SLM-style scenes and testsets, the demo encoder's training, ``make demo``."""
