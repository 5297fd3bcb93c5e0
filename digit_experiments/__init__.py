"""digit-experiments: Hydra-composed Keras MNIST experiments, recorded in MLflow."""

__version__ = "0.1.0"
