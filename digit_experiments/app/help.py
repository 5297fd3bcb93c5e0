"""`--help`: the option lists come from conf/ itself, and the text answers at once.

conf/config.yaml's help template asks for `${digits.options:GROUP}`, which lists the
YAML files of conf/GROUP/: a new option file is in the help without anyone writing it
there. Hydra's own --help composes the config and then lists every config group of
every plugin (1.5 s on 2 cores) for a `$APP_CONFIG_GROUPS` our template does not use;
`fast_help` renders the same template from the same composed config without that.
"""

from __future__ import annotations

import string
import textwrap
from pathlib import Path

from omegaconf import OmegaConf, open_dict

# conf/ lives at the top of the repository, beside this package (editable install).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# The help template's option column starts here ("  regularization: " is 18 wide).
INDENT = 18
WIDTH = 92


def options(group: str) -> str:
    """The options of config group `group`, as files in conf/<group>/ name them."""
    names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    return textwrap.fill(", ".join(names), width=WIDTH - INDENT, subsequent_indent=" " * INDENT)


def fast_help(argv: list[str]) -> bool:
    """`--help` [overrides...] rendered as Hydra renders it, without listing every config
    group; anything else (other flags, a bad override) goes to Hydra. Returns whether it
    printed the help."""
    if not {"--help", "-h"} & set(argv):
        return False
    overrides = [a for a in argv if a not in ("--help", "-h")]
    if any(a.startswith("-") for a in overrides):
        return False
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - Hydra's own path reports it properly
        return False
    template = cfg.hydra.help.template
    with open_dict(cfg):
        del cfg["hydra"]
    print(string.Template(template).safe_substitute(CONFIG=OmegaConf.to_yaml(cfg)))
    return True
