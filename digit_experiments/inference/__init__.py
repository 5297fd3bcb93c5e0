"""Inference: pictures to model input (preprocess), loading a model from any URI
(loading; fetch: a store's model resolved by a second process while TensorFlow is
imported), the Predictor that ties them together, the model `mlflow models serve` serves
(served: pictures in, digits out), and the Model Registry (registry)."""
