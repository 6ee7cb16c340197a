# Stage 3a: train the residual diffusion model (unless model.checkpoint points at one).


if not config["model"]["checkpoint"]:

    rule train:
        """EDM residual diffusion model trained on ERA5 (fine, coarsened) pairs."""
        input:
            fine=expand(f"{OUT}/reference/fine/{{variable}}.nc", variable=VARS),
            coarse=expand(f"{OUT}/reference/coarse/{{variable}}.nc", variable=VARS),
            static=config["reference"]["static"],
        output:
            checkpoint=f"{OUT}/model/checkpoint.pt",
        params:
            config=cfg_slice("model", "search.variables", "domain.id", "domain.lat", "domain.lon", "grid", "regrid.backend"),
        log:
            f"{OUT}/logs/train.log",
        benchmark:
            f"{OUT}/benchmarks/train.tsv"
        resources:
            gpu=1,
        threads: 2
        conda:
            "../../envs/downscale.yaml"
        script:
            "../scripts/train.py"
