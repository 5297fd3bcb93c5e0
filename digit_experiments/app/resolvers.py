"""The `${digits.*:...}` resolvers conf/ uses; registered by the entry point (and by
anything that composes conf/ itself: tests, benchmarks)."""

from __future__ import annotations

from omegaconf import OmegaConf

from digit_experiments.app.help import options


def job_cpus(threads: int | None) -> int:
    """CPUs a launcher reserves for one job (Ray's num_cpus): trainer.threads, else 1."""
    return int(threads) if threads else 1


RESOLVERS = {
    "digits.options": options,  # the help's option lists (app/help.py)
    "digits.job_cpus": job_cpus,  # conf/hydra/launcher/ray.yaml
}


def register_resolvers() -> None:
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
