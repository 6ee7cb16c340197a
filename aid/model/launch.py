"""Training on several GPUs of one node: the ``train`` rule re-launches itself under torchrun.

Why a re-launch: Snakemake starts one process per job, DDP needs one process per GPU. With
``gpu: N`` (N > 1) the job writes its arguments to a JSON file next to the checkpoint and runs
``python -m torch.distributed.run --standalone --nproc_per_node N -m aid.model.launch <file>``;
each rank then calls :func:`aid.model.train.train_from_config`, which turns on DDP from the
``WORLD_SIZE`` torchrun sets (each rank draws its own shard of the sample stream; rank 0 writes).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def train(
    config: Mapping[str, Any],
    fine_paths: Sequence[str | os.PathLike[str]],
    coarse_paths: Sequence[str | os.PathLike[str]],
    static_path: str | os.PathLike[str],
    checkpoint_out: str | os.PathLike[str],
    threads: int = 2,
    gpus: int = 1,
) -> Path:
    """Train in this process (``gpus`` <= 1, or already under torchrun) or on ``gpus`` processes."""
    from aid.model.train import train_from_config

    if int(gpus) <= 1 or "WORLD_SIZE" in os.environ:
        return train_from_config(config, fine_paths, coarse_paths, static_path, checkpoint_out, threads=threads)
    out = Path(checkpoint_out)
    spec = out.with_name(f".{out.name}.torchrun.json")
    spec.write_text(json.dumps({"config": config, "fine": [str(p) for p in fine_paths],
                                "coarse": [str(p) for p in coarse_paths], "static": str(static_path),
                                "out": str(out), "threads": max(1, int(threads) // int(gpus))}, default=str))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(gpus)}",
           "-m", "aid.model.launch", str(spec)]
    log.info("training with %d processes (DDP under torchrun): %s", gpus, " ".join(cmd))
    try:
        subprocess.run(cmd, check=True)
    finally:
        spec.unlink(missing_ok=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from aid.model.train import train_from_config

    logging.basicConfig(level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    train_from_config(spec["config"], spec["fine"], spec["coarse"], spec["static"], spec["out"],
                      threads=int(spec["threads"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
