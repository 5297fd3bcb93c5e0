"""What Hydra tells a job about how it was launched (nothing, when it was not)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf


@dataclass
class Runtime:
    cwd: Path  # where the user started the command (the project root)
    output_dir: Path  # this job's Hydra output directory
    overrides: list[str]  # the job's task overrides, as typed (or chosen by a sweeper)
    multirun: bool
    job_num: int
    parallel_jobs: int  # jobs the launcher runs at once (joblib's n_jobs)
    # CPUs the launcher reserved for this job: Ray's num_cpus, submitit's cpus_per_task.
    cpus: int | None = None


def hydra_runtime() -> Runtime | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Runtime(
        cwd=Path(hc.runtime.cwd),
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
        multirun=hc.mode == RunMode.MULTIRUN,
        job_num=hc.job.num if hc.job.get("num") is not None else 0,
        parallel_jobs=int(OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1),
        cpus=OmegaConf.select(hc, "launcher.ray.remote.num_cpus", default=None)
        or OmegaConf.select(hc, "launcher.cpus_per_task", default=None),
    )
