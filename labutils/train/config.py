"""What a run depends on: its config, the presets, and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from labutils import models
from labutils.model import ModelConfig

SCHEDULES = ("cosine", "wsd")


@dataclass
class TrainConfig:
    """Everything a run depends on; ``model`` holds the fields of the model's config (vocabularies filled in).

    ``architecture`` names the model (:data:`labutils.models.KINDS`): ``model`` holds ``ModelConfig`` fields
    for the encoder–decoder, ``DecoderOnlyConfig`` fields for the decoder-only model.
    """

    model: dict[str, Any] = field(default_factory=dict)
    architecture: str = models.DEFAULT_KIND
    lr: float = 1e-3  # peak learning rate, reached at the end of the warmup
    min_lr: float = 1e-5  # the floor of the decay
    warmup_steps: int = 500
    max_steps: int = 20_000
    schedule: str = "cosine"  # "cosine": decay over the whole run; "wsd": warmup, stable, decay
    decay_steps: int = 0  # wsd: the last decay_steps steps before max_steps decay linearly to min_lr
    stage: str = ""  # a name for this run's rows of log.csv, e.g. "3" or "3 decay"
    batch_size: int = 256  # at most this many sequences per batch …
    max_tokens: int | None = 8000  # … and at most this many (source + target) tokens, padding included
    weight_decay: float = 0.01  # on weight matrices only
    clip_norm: float = 1.0  # gradient clipping; 0 turns it off
    label_smoothing: float = 0.0
    val_every: int = 500  # steps between validations (a row of log.csv each)
    val_size: int = 1000  # validation pairs, a fixed subset
    seed: int = 0
    data: str | None = None  # None: the shipped train/validation splits; else a source<TAB>target file
    train_size: int | None = None  # use only this many training pairs (a fixed subset)
    threads: int | None = None  # CPU threads; None: torch's choice (one per core a process may use)
    init: str | None = None  # start from these weights (a weights file or run folder), not random ones

    def __post_init__(self):
        models.check_kind(self.architecture)
        if not isinstance(self.model, dict):  # a config object
            self.model = asdict(self.model)
        vocabularies = {k: v for k, v in asdict(models.config_class(self.architecture)()).items()
                        if k.endswith("vocab_size")}  # fmt: skip
        self.model = {**vocabularies, **self.model}
        unknown = set(self.model) - models.config_fields(self.architecture)
        if unknown:
            raise ValueError(f"unknown {self.architecture} model field {sorted(unknown)[0]!r}")
        self.model_config()  # its own checks: d_model divisible by n_heads, …
        for name in ("max_steps", "batch_size", "val_every", "val_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive whole number, got {getattr(self, name)!r}")
        if not self.lr > 0 or self.min_lr < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be positive, min_lr and warmup_steps not negative")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if not isinstance(self.decay_steps, int) or not 0 <= self.decay_steps <= self.max_steps:
            raise ValueError(
                f"decay_steps must be a whole number from 0 to max_steps, got {self.decay_steps!r}"
            )

    def model_config(self) -> ModelConfig | Any:
        """The model's config object (``ModelConfig``, or ``DecoderOnlyConfig`` for the decoder-only model)."""
        return models.config_class(self.architecture)(**self.model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from flat keys (``{"d_model": 64, "lr": 3e-4}``) or a nested ``model`` dict, or both."""
        training, model = _split(values)
        return cls(model=model, **training)


def _split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split flat config keys into (training fields, model fields); unknown keys are an error."""
    train_names = {f.name: f for f in fields(TrainConfig)}
    model_names = models.config_fields(values.get("architecture", models.DEFAULT_KIND))
    training, model = {}, dict(values.get("model") or {})
    for key, value in values.items():
        if key == "model":
            continue
        if key in train_names:
            default, optional = train_names[key].default, "None" in str(train_names[key].type)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, (int, float)) and not number and not (optional and value is None):
                raise ValueError(f"config key {key!r} expects a number, got {value!r}")
            training[key] = float(value) if isinstance(default, float) else value
        elif key in model_names:
            model[key] = value
        else:
            known = ", ".join(sorted((set(train_names) | model_names) - {"model"}))
            raise ValueError(f"unknown config key {key!r} (known keys: {known})")
    return training, model


#: Recipes, as plain overrides of TrainConfig (model fields and training fields side by side).
PRESETS: dict[str, dict[str, Any]] = {
    # What notebook 05 trains in a minute or so on a CPU, to watch the loss fall; every model field stated here.
    "tiny": {
        "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
        "dropout": 0.0, "max_src_len": 64, "max_tgt_len": 512, "positional": "sinusoidal", "norm_first": True,
        "tie_embeddings": True, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 20, "max_steps": 150,
        "batch_size": 64, "max_tokens": 4000, "val_every": 50, "val_size": 100, "train_size": 3000,
    },
    # The best recipe for a 2-core CPU: no dropout (a few epochs do not overfit), a short warmup and a
    # high peak rate that pre-norm layers tolerate, and batches capped by tokens so long series stay cheap.
    "cpu": {
        "d_model": 128, "n_heads": 4, "n_encoder_layers": 3, "n_decoder_layers": 3, "d_ff": 512,
        "dropout": 0.0, "tie_embeddings": False, "lr": 1.5e-3, "min_lr": 5e-5, "warmup_steps": 300,
        "max_steps": 9_000, "batch_size": 256, "max_tokens": 6000, "val_every": 250, "val_size": 500,
    },
}  # fmt: skip
# The recipe of the shipped model: the cpu recipe, trained longer (labutils/weights/TRAINING.md).
PRESETS["full"] = {**PRESETS["cpu"], "max_steps": 15_000}

#: The decoder-only model's recipes, under the same names. ``tiny`` has the encoder–decoder's tiny budget
#: (steps, batches, pairs), so that notebook 07 compares the two on equal terms; ``cpu`` and ``full`` stack
#: six causal layers of the encoder–decoder's width, about as many weights as its three and three.
DECODER_ONLY_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "architecture": "decoder-only", "d_model": 32, "n_heads": 2, "n_layers": 2, "d_ff": 64, "dropout": 0.0,
        "max_src_len": 64, "max_tgt_len": 512, "positional": "sinusoidal", "norm_first": True,
        "tie_embeddings": True,
        **{k: v for k, v in PRESETS["tiny"].items() if k not in models.config_fields("encoder-decoder")},
    },
    "cpu": {
        "architecture": "decoder-only", "d_model": 128, "n_heads": 4, "n_layers": 6, "d_ff": 512,
        "dropout": 0.0, "tie_embeddings": True, "lr": 1e-3, "min_lr": 3e-5, "warmup_steps": 300,
        "max_steps": 9_000, "batch_size": 256, "max_tokens": 6000, "val_every": 250, "val_size": 500,
    },
}  # fmt: skip
DECODER_ONLY_PRESETS["full"] = {**DECODER_ONLY_PRESETS["cpu"], "max_steps": 15_000}


def presets_for(architecture: str) -> dict[str, dict[str, Any]]:
    """The presets of a model, by name."""
    return DECODER_ONLY_PRESETS if models.check_kind(architecture) == "decoder-only" else PRESETS


def make_config(
    preset: str | dict[str, Any] = "cpu",
    overrides: dict[str, Any] | None = None,
    architecture: str | None = None,
) -> TrainConfig:
    """A preset (by name, or a dict such as a run's config.json) with ``overrides`` applied.

    A preset named by a string is the ``architecture``'s (default: the encoder–decoder's). Keys are flat
    (``{"d_model": 64, "lr": 3e-4}``) or model fields nested in ``model``; unknown keys are a ValueError.
    """
    if isinstance(preset, str):
        table = presets_for(architecture or models.DEFAULT_KIND)
        if preset not in table:
            raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(table)}")
        preset = table[preset]
    elif architecture is not None and preset.get("architecture", models.DEFAULT_KIND) != architecture:
        raise ValueError(
            f"the run is of the {preset.get('architecture', models.DEFAULT_KIND)} model, not the {architecture}"
        )
    return TrainConfig.from_dict(_merge(preset, overrides or {}))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Flat keys of ``base`` updated by those of ``overrides`` (nested ``model`` dicts flattened first)."""
    flat = {**base.get("model", {}), **{k: v for k, v in base.items() if k != "model"}}
    flat.update(overrides.get("model", {}))
    flat.update({k: v for k, v in overrides.items() if k != "model"})
    return flat


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then a decay to ``min_lr`` at ``max_steps``.

    ``cosine`` decays over the whole run. ``wsd`` holds ``lr`` until the last ``decay_steps`` steps and then
    decays linearly: the stable phase can go on for as long as there is time (resume with a larger
    ``max_steps``), and a snapshot is made by a short decay from any point of it (:func:`decay_from`).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "wsd":
        decay_start = config.max_steps - config.decay_steps
        if step < decay_start:
            return config.lr
        progress = min(1.0, (step - decay_start + 1) / max(1, config.decay_steps))
        return config.lr + progress * (config.min_lr - config.lr)
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def decay_from(config: TrainConfig, step: int, decay_steps: int) -> TrainConfig:
    """The config that ends a warmup-stable-decay run: ``decay_steps`` of decay starting at ``step``."""
    if config.schedule != "wsd":
        raise ValueError(
            f"only a warmup-stable-decay run (schedule 'wsd') can be decayed; this one is {config.schedule!r}"
        )
    stage = f"{config.stage} decay".strip()
    return TrainConfig.from_dict(
        {**config.to_dict(), "max_steps": step + decay_steps, "decay_steps": decay_steps, "stage": stage}
    )
