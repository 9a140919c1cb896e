"""Render infra/ (kustomize layout) in Python: `litops infra render --overlay gpu`.

No `kustomize` binary installs from the registries this project may use, so this implements the
subset of kustomize that infra/ uses, with kustomize's semantics:
  - `resources`: YAML files (multi-document) and directories holding a kustomization.yaml;
  - `namespace`: set on every namespaced object;
  - `patches` with `path`: strategic-merge patches matched by apiVersion group, kind and name;
    maps merge recursively, lists of maps merge by `name` (or `metadata.name`, as for
    volumeClaimTemplates), other lists are replaced;
  - `images`: `name` -> `newName` / `newTag` / `digest` on containers' and init containers'
    images; a digest replaces the tag (`name@sha256:...`), as in kustomize.
On a machine with kubectl, `kubectl kustomize infra/overlays/gpu` gives the same objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "StorageClass",
                  "CustomResourceDefinition", "PersistentVolume"}
OVERLAYS = ("dev", "gpu")


class InfraError(ValueError):
    pass


def infra_dir() -> Path:
    """infra/ of the source tree (the CLI runs from a checkout; images do not ship infra/)."""
    here = Path(__file__).resolve().parent.parent / "infra"
    if here.is_dir():
        return here
    cwd = Path.cwd() / "infra"
    if cwd.is_dir():
        return cwd
    raise InfraError("infra/ not found: run from a litops checkout")


def _load_docs(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    group = obj.get("apiVersion", "").rsplit("/", 1)[0] if "/" in obj.get("apiVersion", "") else ""
    return group, obj.get("kind", ""), obj.get("metadata", {}).get("name", "")


def _item_name(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    return item.get("name") or (item.get("metadata") or {}).get("name")


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge (the subset kustomize applies to built-in kinds' named lists)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and patch and all(_item_name(i) for i in patch) \
            and all(_item_name(i) for i in base):
        out = [copy.deepcopy(i) for i in base]
        index = {_item_name(i): n for n, i in enumerate(out)}
        for item in patch:
            n = index.get(_item_name(item))
            if n is None:
                out.append(copy.deepcopy(item))
            else:
                out[n] = merge(out[n], item)
        return out
    return copy.deepcopy(patch)


def split_image(ref: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; a registry port (host:5000/x) is part of the name."""
    rest, _, digest = ref.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest
    return rest, "", digest


def _set_images(obj: dict[str, Any], images: list[dict[str, str]]) -> None:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        name, tag, digest = split_image(c.get("image", ""))
        for rule in images:
            if rule["name"] != name:
                continue
            new_name = rule.get("newName", name)
            if rule.get("digest"):
                c["image"] = f"{new_name}@{rule['digest']}"
            elif rule.get("newTag"):
                c["image"] = f"{new_name}:{rule['newTag']}"
            else:  # renamed only: keep the tag and digest
                c["image"] = new_name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            break


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization directory, as `kustomize build` would emit them."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise InfraError(f"{directory}: no kustomization.yaml")
    kz = _load_docs(kfile)[0]
    objs: list[dict[str, Any]] = []
    for res in kz.get("resources", []):
        p = (directory / res).resolve()
        objs.extend(build(p) if p.is_dir() else _load_docs(p))
    for patch in kz.get("patches", []):
        for doc in _load_docs(directory / patch["path"]):
            matches = [i for i, o in enumerate(objs) if _key(o) == _key(doc)]
            if not matches:
                raise InfraError(f"{directory / patch['path']}: patch target {_key(doc)} not found")
            for i in matches:
                objs[i] = merge(objs[i], doc)
    if ns := kz.get("namespace"):
        for o in objs:
            if o.get("kind") not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = ns
    if images := kz.get("images"):
        for o in objs:
            _set_images(o, images)
    return objs


def render(overlay: str | None = None, root: Path | None = None) -> list[dict[str, Any]]:
    root = root or infra_dir()
    if overlay is None or overlay == "base":
        return build(root / "base")
    if overlay not in OVERLAYS and not (root / "overlays" / overlay).is_dir():
        raise InfraError(f"unknown overlay {overlay!r} (have: base, {', '.join(OVERLAYS)})")
    return build(root / "overlays" / overlay)


def to_yaml(objs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)
