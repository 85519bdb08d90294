"""Kedro project settings: config loader with this project's resolvers, hooks."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from rq_kg_pipeline.config_resolvers import package_dir
from rq_kg_pipeline.hooks import FlatMlflowParams

HOOKS = (FlatMlflowParams(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${package_dir:pykeen.datasets} -> folder of an installed package: the default KG ships inside PyKEEN.
    # ${oc.env:RQKG_KG_DIR,default} -> point any environment at another KG folder without editing conf/.
    "custom_resolvers": {"package_dir": package_dir, "oc.env": oc.env},
}
