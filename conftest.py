"""The suite's pytest plugins: pytest reads `pytest_plugins` only from the root conftest.

tests/_support/daemons.py: the session's Slurm test cluster and dockerd (fixtures
slurm_cluster, job_env, docker_engine, docker_env)."""

pytest_plugins = ("tests._support.daemons",)
