"""hydra/launcher=ray: hydra-ray-launcher's launcher, waiting for every job.

The plugin gathers its jobs with `[ray.get(job) for job in jobs]`: the first job whose
worker died raises there, the driver exits, and Ray cancels the jobs still running with
it. This launcher (the plugin's class, its config and `setup`; only `launch` differs)
waits for every job, and a job Ray could not finish (its worker killed, out of memory,
its node gone) comes back as a FAILED job, as one that raised does: the other jobs
finish, Hydra's sweeper reports the failure after the batch, and the sweep callback
ends the lost job's MLflow run FAILED.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginRayLauncher
from omegaconf import OmegaConf, open_dict

from digit_experiments.errors import JobLost

log = logging.getLogger(__name__)


class RayLauncher(PluginRayLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        import ray

        setup_globals()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        init = OmegaConf.to_container(self.ray_cfg.init, resolve=True)
        if not ray.is_initialized():
            # Only what conf/ sets: the plugin's own launch adds object_store_memory, which
            # Ray refuses when joining a running cluster (hydra#2893).
            ray.init(**init)
        remote = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}
        task = ray.remote(**remote)(_run_job) if remote else ray.remote(_run_job)
        log.info("Ray launcher: %d jobs, sweep output dir %s", len(job_overrides), sweep_dir)
        pending = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"job_id_for_{idx}"
                sweep_config.hydra.job.num = idx
            ref = task.remote(
                self.hydra_context, sweep_config, self.task_function, Singleton.get_state()
            )
            pending.append((idx, list(overrides), ref))
        return [_result(ray, idx, overrides, ref) for idx, overrides, ref in pending]


def _run_job(hydra_context, sweep_config, task_function, singleton_state) -> JobReturn:
    """One job, in a Ray worker: Hydra's own job runner, as the plugin runs it."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def _result(ray: Any, idx: int, overrides: list[str], ref) -> JobReturn:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.error("job #%d was lost: %s: %s", idx, type(e).__name__, reason)
        lost = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        lost.return_value = JobLost(f"job #{idx}: its Ray worker was lost ({reason})")
        return lost
