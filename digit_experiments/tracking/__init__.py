"""The tracking layer: where runs go (store), a run's lifecycle and what it logs (through
MlflowClient with explicit run ids), the Keras tracking callback, finding runs, and
credentials kept out of all of it (redaction). Imports core, never the layers above."""
