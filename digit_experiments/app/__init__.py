"""The app: the Hydra entry point (main), the steps of one run (run), the sweep
callback that makes a multirun one MLflow parent run (sweep), and the fast --help."""
