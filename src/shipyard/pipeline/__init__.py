"""The DVC stages, one module each: pure functions plus a thin `run()` that does the I/O."""

STAGES = ("validate", "featurize", "train", "evaluate", "register")
