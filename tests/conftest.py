"""Shared fixtures: the real data folder and the demo archive (written once per test session)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

# pytest -n 2 runs two workers on a 2-core machine: one OpenMP thread each, or torch/BLAS threads
# oversubscribe the cores and spin (measured: a 1 M-parameter forward pass 0.1 s -> 7.9 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

#: ``/work/shared/data`` seen from this repository (``<repo>/../shared/data``).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

log = logging.getLogger(__name__)

#: Test modules whose tests all run on one xdist worker, in file order (see
#: :func:`pytest_xdist_make_scheduler`); every other test is scheduled alone.
ONE_WORKER_MODULES: dict[str, str] = {
    "test_slurm.py": "its sbatch checks run in file order, the workflow check (the shared pipeline run's "
                     "log, AID_SLURM_WORKFLOW=full) last",
    "test_downscale.py": "its trained checkpoint and downscaled year (session fixtures) are built once",
    "test_adjust.py": "its adjusted CanESM2/NRCan and demo-file fixtures are built once",
    "test_faults.py": "the SIGKILL test's `snakemake --unlock` clears every lock of the repository's "
                      ".snakemake, so the keep-going run must not be running beside it",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201
    """xdist's load scheduling, except that each of :data:`ONE_WORKER_MODULES` goes to one worker whole.

    Why not ``--dist loadgroup`` with ``xdist_group`` marks: pytest-xdist 3.8 tags grouped tests by
    rewriting ``item._nodeid``, which pytest 9 no longer reads, so the marks group nothing (every
    grouped module was split over both workers). Scheduling is the controller's job and it sees only
    node ids, so the groups are named here by module file.
    """
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    # Units in collection order (pytest_collection_modifyitems), not LoadScopeScheduling's default
    # of the units with most tests first, which would put the grouped modules ahead of everything.
    config.option.loadscopereorder = False
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if Path(module).name in ONE_WORKER_MODULES else nodeid

        def remove_node(self, node):  # noqa: ANN001, ANN202
            """A crashed worker's running test is reported failed and not run again (as ``--dist
            load`` does; LoadScopeScheduling would queue it again, and a test that crashes or hangs
            its worker would then take a second worker down with it); the rest of its work goes
            back to the queue."""
            workload = self.assigned_work.pop(node)
            pending = [(scope, nodeid) for scope, unit in workload.items() for nodeid, done in unit.items() if not done]
            if not pending:
                return None
            scope, crashed = pending[0]  # tests of a unit run in order: the first not done was running
            workload[scope][crashed] = True
            for scope, unit in workload.items():
                if not all(unit.values()):
                    self.workqueue[scope] = unit
            for other in self.assigned_work:
                self._reschedule(other)
            return crashed

    return ModuleGroups(config, log)


def _uses_pipeline(item: pytest.Item) -> bool:
    return "pipeline" in getattr(item, "fixturenames", ()) or item.get_closest_marker("pipeline") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order: one test of the shared pipeline run first, every test that does not need the run next,
    the rest of the run's tests last (stable otherwise).

    The run (``pipeline``; through SLURM on CI) takes minutes and the first worker to need it runs it
    while any other worker that needs it waits on its lock. Starting it at once and giving the other
    worker the independent tests meanwhile keeps both busy. Every xdist worker collects the same
    items and applies the same order, which is the order the controller schedules in.
    """
    first = next((it for it in items if _uses_pipeline(it)), None)
    items.sort(key=lambda it: 0 if it is first else 2 if _uses_pipeline(it) else 1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real climate data (README.md there lists every file)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def cmip6_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An intake-esm catalog (``aid catalog``) of the whole real CMIP6 DRS tree, built once."""
    from aid.catalog import build_catalog

    return build_catalog(SHARED_DATA / "cmip6" / "CMIP6", tmp_path_factory.mktemp("cmip6cat") / "cmip6.json")


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-config demo archive, built once: returns its root (``CMIP6/``, ``reference/``,
    ``manifest.json``). Its build time is logged (speed is benchmarked, not tested)."""
    from aid.config import load_config
    from aid.demo import write_demo_archive

    root = tmp_path_factory.mktemp("demo") / "demo-archive"
    cfg = load_config(overrides={"output_dir": str(root.parent)})
    t0 = time.perf_counter()
    write_demo_archive(cfg, SHARED_DATA / "era5", root, root / "manifest.json")
    seconds = time.perf_counter() - t0
    log.info("demo archive built in %.1f s", seconds)
    return root


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory, worker_id: str):
    """One run of the real workflow on tests/data/tiny.yaml per test session (tests/workflow_run.py).

    Under pytest-xdist every worker has its own session, so the run goes to the base temp folder
    the workers share and a file lock makes the first worker run it while the other waits (the
    pattern pytest-xdist documents for once-only session fixtures). Tests only read it, or re-run
    one job into it bit-identically (atomic renames).
    """
    from filelock import FileLock
    from workflow_run import run_pipeline, tiny_config

    base = tmp_path_factory.getbasetemp()
    root = base.parent if worker_id != "master" else base
    out = root / "tiny-run" / "results"
    done = root / "tiny-run" / "done"
    with FileLock(str(root / "tiny-run.lock")):
        if not done.exists():
            run_pipeline(out)
            done.touch()
    return out, tiny_config(out)


@pytest.fixture(scope="session")
def pipeline_lock(pipeline, tmp_path_factory: pytest.TempPathFactory, worker_id: str):
    """A lock a test holds while it plans against (dry runs), or reads several files of, the shared
    pipeline run; tests that re-run jobs do so in copies of the run."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if worker_id != "master" else base
    return FileLock(str(root / "tiny-run.mutate.lock"))
