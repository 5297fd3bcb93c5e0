"""`python -m digit_experiments.train` and `digits-train`: train one model (or sweep
many with -m), recorded in MLflow. The app lives in digit_experiments.app."""

from digit_experiments.app.main import cli

if __name__ == "__main__":
    cli()
