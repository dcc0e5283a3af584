"""The configuration of one grid cell: every key a suite may set as a default or vary as a matrix axis.

Keys are flat and unique; a suite groups them in sections (``SECTIONS``) only for readability.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError


BUILT_IN_CELLS = ("rnn", "gru", "lstm")
# A user's recurrent module as a cell type (harness.cell.plugin).
CELL_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


class CellConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # data
    corpus: str = "gutenberg-35"
    strip_boilerplate: bool = True
    max_tokens: int = Field(10_000, gt=0)
    val_tokens: int = Field(5_000, ge=0)
    # Selection text: the select_tokens after the held-out text, never trained on, on which the best epoch
    # (and, across cells, the best learning rate) is chosen, so that the held-out text only reports.
    select_tokens: int = Field(0, ge=0)
    # first: every epoch reads the first max_tokens tokens (the recipe); book: all of the book but the
    # held-out and selection text, max_tokens tokens per epoch in turn (the same tokens per epoch, more text).
    train_text: Literal["first", "book"] = "first"
    # model
    # rnn, gru, lstm, or a user's recurrent module as "package.module:factory" (harness.cell.plugin)
    cell: str = "lstm"
    layers: int = Field(2, ge=1, le=8)
    direction: Literal["uni", "bi"] = "uni"
    hidden: int = Field(256, ge=1)
    # model.params: the parameter count to match; the hidden size is then chosen per cell type, depth and
    # direction (the one whose count is closest) and recorded with the count, in place of model.hidden.
    target_params: Optional[int] = Field(None, ge=1)
    # LSTM only: the forget gate's bias at initialisation (bias_ih's forget part; bias_hh's is zeroed), so that
    # a deep network starts by remembering; 0 keeps PyTorch's initialisation.
    forget_bias: float = Field(0.0, allow_inf_nan=False)
    # Dropout between recurrent layers and on the last layer's output (training only); 0: none.
    dropout: float = Field(0.0, ge=0, lt=1)
    # torch: nn.RNN/nn.GRU/nn.LSTM; fused: harness.cell.fused_rnn's one-call-per-layer GRU and tanh RNN (CPU, fp32)
    impl: Literal["torch", "fused"] = "torch"
    # train
    epochs: int = Field(500, ge=1)
    batch_size: int = Field(32, ge=1)
    num_steps: int = Field(35, ge=1)
    lr: float = Field(1.0, gt=0, allow_inf_nan=False)
    clip: float = Field(1.0, gt=0, allow_inf_nan=False)
    # sgd without momentum or weight decay is the recipe's update; the others are torch.optim's.
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd
    # The learning rate per epoch: constant, or a half cosine from lr to 0 over the epochs after the warm-up;
    # train.warmup_epochs: a linear rise to lr over the first epochs.
    schedule: Literal["constant", "cosine"] = "constant"
    lr_warmup_epochs: int = Field(0, ge=0)
    sampling: Literal["sequential", "random"] = "sequential"
    precision: Literal["fp32", "bf16"] = "fp32"
    cuda_graphs: bool = False
    # Stop at the first selection evaluation this many epochs after the best one; 0: never.
    patience: int = Field(0, ge=0)
    # eval
    eval_every: int = Field(50, ge=0)  # 0: evaluate only after the last epoch
    prefixes: tuple[str, ...] = ("time traveller", "traveller")
    sample_chars: int = Field(50, ge=0)
    select_every: int = Field(0, ge=0)  # evaluate the selection text every this many epochs; 0: never
    # Evaluate the held-out text after the last epoch too; false: only every eval.every epochs and at the
    # epoch chosen on the selection text (with 50,000 held-out characters an evaluation costs as much as
    # dozens of epochs).
    eval_last: bool = True
    # run
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = Field(0, ge=0)
    threads: Optional[int] = Field(None, ge=1)  # None: torch's default
    timeout: float = Field(3600.0, gt=0)  # seconds, enforced by the grid runner

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info: ValidationInfo):
        # pydantic's lax mode reads true as 1: `model.hidden=true` would train hidden 1 and record true.
        if isinstance(value, bool) and info.field_name in NUMERIC_FIELDS:
            raise PydanticCustomError("bool_not_number", "a boolean is not a number")
        return value

    @field_validator("prefixes")
    @classmethod
    def _prefixes_are_text(cls, value):
        for prefix in value:
            if not prefix or any(not (c == " " or "a" <= c <= "z") for c in prefix):
                raise ValueError(f"prefix {prefix!r} must be non-empty lower-case letters and spaces")
        return value

    @model_validator(mode="after")
    def _one_batch_at_least(self):
        # The sequential partition drops up to num_steps + 1 tokens, then needs one full batch.
        needed = self.batch_size * self.num_steps + self.num_steps + 1
        if self.max_tokens < needed:
            raise ValueError(f"max_tokens = {self.max_tokens} is too small for one batch of "
                             f"batch_size x num_steps; need at least {needed}")
        return self

    @field_validator("cell")
    @classmethod
    def _a_known_cell_or_a_factory(cls, value):
        if value not in BUILT_IN_CELLS and not CELL_FACTORY.fullmatch(value):
            raise ValueError(f"{value!r} is neither rnn, gru, lstm nor a module's factory as package.module:factory")
        return value

    @field_validator("betas")
    @classmethod
    def _betas_are_averages(cls, value):
        if not all(0 <= beta < 1 for beta in value):
            raise ValueError(f"betas {list(value)} must each be at least 0 and below 1")
        return value

    @model_validator(mode="after")
    def _settings_apply(self):
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"train.momentum = {self.momentum} applies to optimizer sgd, not {self.optimizer} "
                             "(adam and adamw have train.betas)")
        if self.betas != (0.9, 0.999) and self.optimizer == "sgd":
            raise ValueError(f"train.betas = {list(self.betas)} applies to optimizer adam or adamw, not sgd")
        if self.lr_warmup_epochs > self.epochs:
            raise ValueError(f"train.warmup_epochs = {self.lr_warmup_epochs} is more than train.epochs = {self.epochs}")
        if self.cell not in BUILT_IN_CELLS and (self.impl == "fused" or self.target_params is not None):
            key = "model.impl = fused" if self.impl == "fused" else "model.params"
            raise ValueError(f"{key} needs cell rnn, gru or lstm, not the module {self.cell}")
        if self.dropout and self.impl == "fused":
            raise ValueError(f"model.dropout = {self.dropout} needs model.impl torch: the fused kernels have no dropout")
        return self

    @model_validator(mode="after")
    def _selection_needs_text(self):
        if self.select_every and not self.select_tokens:
            raise ValueError(f"eval.select_every = {self.select_every} needs selection text: set data.select_tokens")
        if not self.eval_last and not self.select_every and self.val_tokens:
            raise ValueError("eval.last = false needs selection evaluations (eval.select_every): else the held-out "
                             "text is evaluated only every eval.every epochs, never at the end")
        if self.patience and not self.select_every:
            raise ValueError(f"train.patience = {self.patience} needs selection evaluations: set eval.select_every")
        return self

    @property
    def bidirectional(self) -> bool:
        return self.direction == "bi"

    @property
    def cell_id(self) -> str:
        return f"{self.cell}-l{self.layers}-{self.direction}-{self.device}-s{self.seed}"

    def config_hash(self) -> str:
        # A key added after results were stored counts only where it is set, so that the hash of every
        # configuration that leaves it at its default, and so every stored cell and checkpoint, stays the same.
        values = {k: v for k, v in self.model_dump(mode="json").items()
                  if k not in LATER_KEYS or v != LATER_KEYS[k]}
        payload = json.dumps(values, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# Keys added after the first stored results, with their defaults (``config_hash``).
LATER_KEYS = {"target_params": None, "forget_bias": 0.0, "dropout": 0.0, "optimizer": "sgd", "betas": [0.9, 0.999], "weight_decay": 0.0,
              "momentum": 0.0, "schedule": "constant", "lr_warmup_epochs": 0, "eval_last": True}

# Suite sections: section -> {key as written in the suite: CellConfig field}
SECTIONS: dict[str, dict[str, str]] = {
    "data": {"corpus": "corpus", "strip_boilerplate": "strip_boilerplate", "max_tokens": "max_tokens",
             "val_tokens": "val_tokens", "select_tokens": "select_tokens", "train_text": "train_text"},
    "model": {"cell": "cell", "layers": "layers", "direction": "direction", "hidden": "hidden", "impl": "impl",
              "params": "target_params", "forget_bias": "forget_bias", "dropout": "dropout"},
    "train": {"epochs": "epochs", "batch_size": "batch_size", "num_steps": "num_steps", "lr": "lr",
              "clip": "clip", "sampling": "sampling", "precision": "precision", "cuda_graphs": "cuda_graphs",
              "patience": "patience", "optimizer": "optimizer", "betas": "betas", "weight_decay": "weight_decay",
              "momentum": "momentum", "schedule": "schedule", "warmup_epochs": "lr_warmup_epochs"},
    "eval": {"every": "eval_every", "prefixes": "prefixes", "sample_chars": "sample_chars",
             "select_every": "select_every", "last": "eval_last"},
    "run": {"device": "device", "seed": "seed", "threads": "threads", "timeout": "timeout"},
}

FIELDS = tuple(CellConfig.model_fields)
# The keys that take a number (int, float or Optional of one): a boolean is refused for them.
NUMERIC_FIELDS = frozenset(name for name, info in CellConfig.model_fields.items()
                           if info.annotation in (int, float, Optional[int], Optional[float]))
# The keys whose value is a list (``include`` reads a list of lists as their alternatives).
SEQUENCE_FIELDS = frozenset(name for name, info in CellConfig.model_fields.items()
                            if getattr(info.annotation, "__origin__", None) is tuple)
# The axes of the lesson's grid: they identify a cell in every table.
GRID_KEYS = ("cell", "layers", "direction", "device", "seed")


def format_validation_error(exc, where: str, names: dict[str, str] | None = None) -> str:
    """One line from a pydantic ValidationError: where, which key, which value, what is allowed."""
    from harness.errors import quote

    err = exc.errors()[0]
    if not err["loc"]:  # a rule over several keys: its own message names them and their values
        error = err.get("ctx", {}).get("error")
        return f"{where}: {error if error is not None else err['msg']}"
    key = ".".join(str(part) for part in err["loc"])
    key = (names or {}).get(key, key)
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        import difflib

        close = difflib.get_close_matches(key.split(".")[-1], FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{where}: unknown key {quote(key)}{hint}"
    message = err["msg"]
    if err.get("ctx", {}).get("expected"):
        message = f"expected {err['ctx']['expected']}"
    return f"{where}: {key} = {quote(value)}: {message}"


def build_config(values: dict, where: str, names: dict[str, str] | None = None) -> CellConfig:
    """Validate ``values`` into a CellConfig or raise HarnessError naming ``where`` and the bad key.
    ``names`` maps field names back to how the user wrote them (e.g. eval_every -> eval.every)."""
    from pydantic import ValidationError

    from harness.errors import HarnessError

    try:
        return CellConfig(**values)
    except ValidationError as exc:
        raise HarnessError(format_validation_error(exc, where, names)) from None


# The suite key of each field, as a user writes it (``train.lr``).
FIELD_TO_SUITE_KEY = {fld: f"{sec}.{key}" for sec, keys in SECTIONS.items() for key, fld in keys.items()}


def suggest(key: str, candidates) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def field_for_axis(key, where: str) -> str:
    """A matrix/exclude/include/--only key: a flat field name or `section.key`."""
    from harness.errors import HarnessError, quote

    if not isinstance(key, str):
        raise HarnessError(f"{where}: key {quote(key)} must be a string")
    if key in FIELDS:
        return key
    if "." in key:
        section, _, sub = key.partition(".")
        if section in SECTIONS and sub in SECTIONS[section]:
            return SECTIONS[section][sub]
    for keys in SECTIONS.values():
        if key in keys:
            return keys[key]
    valid = list(FIELDS) + list(FIELD_TO_SUITE_KEY.values())
    raise HarnessError(f"{where}: unknown key {quote(key)}{suggest(key, valid)}")
