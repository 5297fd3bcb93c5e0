"""Inference: pictures to model input (preprocess), loading a model from any URI
(loading), the Predictor that ties them together, the model `mlflow models serve` serves
(served: pictures in, digits out), and the Model Registry (registry)."""
