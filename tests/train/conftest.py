import pytest

from synaptorch.train.config import RunConfig, build_run_config


@pytest.fixture(scope="session")
def tiny_run():
    """A run of a one-layer BDH on a corpus for 6 steps, evaluated every 3; keywords override training settings.

    Dropout is on by default so that a resume is only exact if the random state is restored too.
    """

    def make(corpus, dropout: float = 0.2, **train) -> RunConfig:
        return build_run_config(
            model_overrides={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_neuron": 32, "dropout": dropout},
            train_overrides={
                "data": str(corpus),
                "batch_size": 4,
                "block_size": 16,
                "max_steps": 6,
                "warmup_steps": 2,
                "log_interval": 1,
                "eval_interval": 3,
                "eval_tokens": 64,
                "keep_last": 10,
                "device": "cpu",
                **train,
            },
        )

    return make
