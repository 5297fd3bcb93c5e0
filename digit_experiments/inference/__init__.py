"""Inference: pictures to model input (preprocess), loading a model from any URI
(loading), the Predictor that ties them together, and the Model Registry (registry)."""
