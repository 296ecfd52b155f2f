"""A sampling job for tests/test_hmc_runs.py: HMC, SGLD, MCLMC, MAMS or replica
exchange on a small digits posterior into each RUN_DIR in turn (resuming a
RUN_DIR that holds the same run): one process can finish a killed run and then
make the uninterrupted one, its programs already compiled.

usage: python run_worker.py {hmc,sgld,sgd_checkpoints,mclmc,mams,replica_exchange}
       RUN_DIR [RUN_DIR ...]
"""

import sys

import jax

import weightspace as ws


NUM_SAMPLES = 30
# Driver steps of each run (warmup transitions + kept draws).
NUM_STEPS = {"hmc": 8 + NUM_SAMPLES, "sgld": 20 + NUM_SAMPLES, "sgd_checkpoints": NUM_SAMPLES,
             "mclmc": 100 + NUM_SAMPLES,
             "mams": 110 + NUM_SAMPLES, "replica_exchange": 50 + NUM_SAMPLES}


def main(sampler: str, run_dir: str, num_samples: int = NUM_SAMPLES) -> None:
    data = ws.data.load("digits", n_train=300)
    post = ws.models.posterior(ws.models.MLP((8,), 10), data, prior_variance=0.2)
    common = dict(num_chains=2, num_samples=num_samples, eval_x=data.x_test[:20],
                  run_dir=run_dir, checkpoint_every=1, progress=False)
    if sampler == "hmc":
        ws.samplers.hmc(post, jax.random.key(11), num_warmup=8, trajectory_length=0.05,
                        **common)
    elif sampler in ("mclmc", "mams"):
        # Commits every 10 steps: the tuning state is checkpointed mid-warmup too.
        # MAMS: 100 MCLMC transitions, then 10 of dual averaging.
        extra = {"num_warmup": 110, "num_adjusted_warmup": 10} if sampler == "mams" \
            else {"num_warmup": 100}
        getattr(ws.samplers, sampler)(post, jax.random.key(11), thin=3,
                                      **{**common, **extra, "checkpoint_every": 10})
    elif sampler == "replica_exchange":
        # 50 warmup transitions (ladder refits at 10, 20, 30), commits every 10.
        ws.samplers.replica_exchange(post, jax.random.key(11), num_temperatures=4,
                                     num_warmup=50, trajectory_length=0.05,
                                     **{**common, "checkpoint_every": 10})
    elif sampler == "sgd_checkpoints":
        # A training run kept after listed epochs, 1 and 2 apart in turn: its
        # checkpoints are its draws, each ending where the list says.
        common.pop("num_samples")
        save_at = [3 * (i // 2) + 1 + i % 2 for i in range(num_samples)]
        ws.samplers.sgd(post, jax.random.key(11), num_epochs=save_at[-1], save_at=save_at,
                        batch_size=32, learning_rate=1e-3, **common)
    else:
        ws.samplers.sgld(post, jax.random.key(11), num_warmup=20, batch_size=32,
                         step_size=1e-4, thin=7, **common)
    print("done", flush=True)


if __name__ == "__main__":
    for directory in sys.argv[2:]:
        main(sys.argv[1], directory)
