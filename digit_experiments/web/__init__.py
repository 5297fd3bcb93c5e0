"""The web app: a Streamlit page over inference.Predictor (`digits app`)."""
