import pytest

from models.config import DeepARConfig, sagemaker_time_freq
from saodf.errors import ConfigError


def test_config_defaults_valid():
    DeepARConfig().validate()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prediction_length", 0, r"prediction_length=0 is out of range; valid values are >= 1"),
        ("context_length", -3, r"context_length=-3 is out of range"),
        ("epochs", 1.5, r"epochs=1.5 is not an integer"),
        ("num_cells", 29, r"num_cells=29 is out of range; valid values are in \[30, 200\]"),
        ("num_cells", 201, r"num_cells=201 is out of range"),
        ("num_layers", 9, r"num_layers=9 is out of range; valid values are in \[1, 8\]"),
        ("mini_batch_size", 0, r"mini_batch_size=0 is out of range"),
        ("early_stopping_patience", 0, r"early_stopping_patience=0 is out of range"),
        (
            "dropout_rate",
            1.0,
            r"dropout_rate=1.0 is out of range; valid values are in \[0.0, 1.0\)",
        ),
        (
            "learning_rate",
            0.5,
            r"learning_rate=0.5 is out of range; valid values are in \[0.0001, 0.1\]",
        ),
        ("likelihood", "poisson", r"likelihood='poisson' is invalid; use one of"),
        ("time_freq", "fortnight", r"time_freq='fortnight' is not a pandas frequency"),
        ("num_batches_per_epoch", 0, r"num_batches_per_epoch=0 is out of range"),
        ("epochs", True, r"epochs=True is not an integer"),
    ],
)
def test_config_rejects_out_of_range(field, value, message):
    config = DeepARConfig(**{field: value})
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_config_sagemaker_hyperparameters_strings():
    hyperparameters = DeepARConfig(
        time_freq="h", early_stopping_patience=3
    ).to_sagemaker_hyperparameters()
    assert hyperparameters["time_freq"] == "H"
    assert hyperparameters["early_stopping_patience"] == "3"
    assert hyperparameters["likelihood"] == "student-T"
    assert all(isinstance(v, str) for v in hyperparameters.values())


def test_config_sagemaker_drops_local_fields():
    hyperparameters = DeepARConfig().to_sagemaker_hyperparameters()
    assert "num_batches_per_epoch" not in hyperparameters
    assert "seed" not in hyperparameters
    assert "early_stopping_patience" not in hyperparameters


@pytest.mark.parametrize(
    ("freq", "expected"),
    [("5min", "5min"), ("min", "min"), ("2h", "2H"), ("D", "D"), ("W-SUN", "W"), ("MS", "M")],
)
def test_sagemaker_time_freq_converts(freq, expected):
    assert sagemaker_time_freq(freq) == expected


def test_sagemaker_time_freq_rejects_seconds():
    with pytest.raises(ConfigError, match=r"time_freq='1s' has no SageMaker DeepAR equivalent"):
        sagemaker_time_freq("1s")


@pytest.mark.parametrize(
    ("likelihood", "output"),
    [
        ("gaussian", "NormalOutput"),
        ("student-T", "StudentTOutput"),
        ("negative-binomial", "NegativeBinomialOutput"),
        ("beta", "BetaOutput"),
    ],
)
def test_config_maps_likelihood(likelihood, output):
    kwargs = DeepARConfig(likelihood=likelihood).to_gluonts_estimator_kwargs()
    assert type(kwargs["distr_output"]).__name__ == output


def test_config_rejects_deterministic_l1_locally():
    config = DeepARConfig(likelihood="deterministic-L1")
    config.validate()
    with pytest.raises(
        ConfigError, match=r"'deterministic-L1' has no GluonTS torch DeepAR equivalent"
    ):
        config.to_gluonts_estimator_kwargs()


def test_config_estimator_kwargs_names():
    kwargs = DeepARConfig(
        num_cells=64, learning_rate=0.01, mini_batch_size=16
    ).to_gluonts_estimator_kwargs()
    assert kwargs["hidden_size"] == 64
    assert kwargs["lr"] == 0.01
    assert kwargs["batch_size"] == 16


def test_config_overrides_apply():
    config = DeepARConfig.from_overrides({"prediction_length": 6}, {"epochs": 2})
    assert config.prediction_length == 6
    assert config.epochs == 2


def test_config_overrides_reject_unknown():
    with pytest.raises(ConfigError, match=r"unknown DeepAR hyperparameter 'epoch'"):
        DeepARConfig.from_overrides({}, {"epoch": 2})
