"""A sampling job for tests/test_hmc_runs.py: HMC on a small digits posterior
into RUN_DIR (resumes when RUN_DIR holds the same run).

usage: python hmc_run_worker.py RUN_DIR [NUM_SAMPLES]
"""

import sys

import jax

import weightspace as ws


def main(run_dir: str, num_samples: int) -> None:
    data = ws.data.load("digits", n_train=300)
    post = ws.models.posterior(ws.models.MLP((8,), 10), data, prior_variance=0.2)
    ws.samplers.hmc(post, jax.random.key(11), num_chains=2, num_samples=num_samples,
                    num_warmup=8, trajectory_length=0.05, eval_x=data.x_test[:20],
                    run_dir=run_dir, checkpoint_every=1, progress=False)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30)
