"""This project's Hydra launcher plugins (Hydra loads launchers only from the
`hydra_plugins` namespace package): the Ray launcher that waits for every job."""
