"""The core: config schemas, data, models, schedules, the input pipeline, training steps
and evaluation. Pure NumPy and Keras; it never imports MLflow (a test checks)."""
