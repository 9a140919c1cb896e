"""Lock modes in the LiT notation: one letter per tower, image tower first.

- `L` locked: pretrained weights, no gradients, eval mode (BatchNorm statistics frozen);
- `U` pretrained and unlocked: pretrained weights, trained;
- `u` from scratch: random initialisation, trained.

`Lu` is LiT (locked image tower, text tower from scratch), `Uu` fine-tunes both, `uu` trains
both from scratch (the embedded default). `unlocked_groups=k` unlocks the last k parameter
groups of a locked tower (its BatchNorm layers in the locked part stay frozen).

Building a model picks each tower's starting weights from its letter; nothing is frozen until the
trainer calls `LiTModel.lock()`, which applies the letters through `lock_tower`.

Checkpoints written before the LiT notation used `locked | unlocked | scratch` for the image
tower (the text tower always from scratch); they still load.
"""

from __future__ import annotations

MODES = {"L": "locked", "U": "pretrained", "u": "scratch"}
LEGACY = {"locked": "Lu", "unlocked": "Uu", "scratch": "uu"}


def parse_lock(lock: str) -> tuple[str, str]:
    """'Lu' -> ('L', 'u'); legacy names map onto their LiT equivalent."""
    lock = LEGACY.get(lock, lock)
    if len(lock) != 2 or any(c not in MODES for c in lock):
        raise ValueError(f"model.lock must be two letters of L/U/u (image tower, text tower), e.g. Lu; got {lock!r}")
    return lock[0], lock[1]


def is_pretrained(mode: str) -> bool:
    return mode in ("L", "U")


def load_scratch_weights(tower, mode: str, pretrained_path: str, which: str) -> None:
    """Start a scratch tower whose letter is L or U from `pretrained_path` (a state dict), as the model
    is built. Towers from litops.core.pretrained (those with `lock`) load their own weights."""
    if mode == "u" or hasattr(tower, "lock"):
        return
    if not pretrained_path:
        raise ValueError(f"{which} tower {type(tower).__name__} has no pretrained weights: lock mode {mode} "
                         f"needs model.{'pretrained_path' if which == 'image' else 'text_pretrained_path'} (or use u)")
    from litops.core.pretrained import load_weights, read_state_dict

    load_weights(tower, read_state_dict(pretrained_path), pretrained_path)


def lock_tower(tower, mode: str, unlocked_groups: int, which: str) -> bool:
    """Freeze a tower whose letter is L: all but its last `unlocked_groups` parameter groups where the
    tower has groups (`tower.lock`), the whole tower otherwise; U and u leave it trainable. True when
    the tower is locked whole: its outputs never change, and it stays in eval mode while training."""
    if mode != "L":
        return False
    if hasattr(tower, "lock"):
        tower.lock(unlocked_groups)
    elif unlocked_groups:
        raise ValueError(f"unlocked_groups is not supported for the {which} tower {type(tower).__name__}")
    else:
        tower.requires_grad_(False)
    return unlocked_groups == 0
