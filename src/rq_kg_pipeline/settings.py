"""Kedro project settings: config loader with this project's resolvers, hooks."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from rq_kg_pipeline.config_resolvers import package_dir
from rq_kg_pipeline.hooks import MlflowRunLabels, MlflowTrainedModel, NodeCost, PipelineSummary, ReadableMlflowHook
from rq_kg_pipeline.params import ValidateParametersHook
from rq_kg_pipeline.run_lock import RunLockHook, SessionStartLock

# Hooks of one kind run last-registered first: kedro-mlflow's hook opens the MLflow run before the
# hooks listed before it log to it; NodeCost logs its totals tryfirst, before the run is ended.
_node_cost = NodeCost()
HOOKS = (MlflowRunLabels(), MlflowTrainedModel(), _node_cost, PipelineSummary(cost=_node_cost), ReadableMlflowHook())
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")  # its hook is ReadableMlflowHook above
_session_start = SessionStartLock()
# Called in reverse order of registration: the parameters are checked first, then the session start
# is serialised (kedro-mlflow creates mlflow.db), and each run holds its KG's lock.
HOOKS += (RunLockHook(), _session_start.release_hook, _session_start, ValidateParametersHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${package_dir:pykeen.datasets} -> folder of an installed package: the default KG ships inside PyKEEN.
    # ${oc.env:RQKG_KG_DIR,default} -> point any environment at another KG folder without editing conf/.
    "custom_resolvers": {"package_dir": package_dir, "oc.env": oc.env},
}
