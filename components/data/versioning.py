"""Data versioning with DVC's Python API: the data repo at <home>/data (git + DVC).

Layout of the data repo:
    .dvc/            DVC config; config.local (not committed): default remote `litops`
                     -> <home>/dvc-remote (or remote_url), site cache; the cache
    datasets/<name>/ the dataset (tracked by DVC as one directory output)
    datasets/<name>.dvc  committed to git; its `md5` (`<hash>.dir`) is the data version
    quarantine/      rejected samples and ingest reports (git-ignored, never versioned)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from litops.core.component_cli import UserError
from litops.core.workspace import Workspace

from .metadata import read_dataset_json

REMOTE_NAME = "litops"
GIT_USER = ("litops", "litops@localhost")
GITIGNORE = "/quarantine/\ndatasets/.*.synth-partial/\n"


class DataRepoError(UserError):
    """Git or DVC failed on the data repo (the message is kept to one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _quiet_dvc() -> None:
    """No analytics; DVC's info chatter ("Initialized DVC repository.") is not printed
    (DVC's log handler writes to the original stdout, which carries the result line)."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    import logging

    import dvc  # noqa: F401 - its import sets up DVC's loggers (level INFO); lower them after

    log = logging.getLogger("dvc")
    if log.getEffectiveLevel() < logging.WARNING and not os.environ.get("LITOPS_DVC_VERBOSE"):
        log.setLevel(logging.WARNING)


def read_dvc_file(path: Path) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return data if isinstance(data, dict) else None


def version_of_dvc_file(path: Path) -> str | None:
    data = read_dvc_file(path)
    try:
        return data["outs"][0]["md5"] if data else None
    except (KeyError, IndexError, TypeError):
        return None


class DataRepo:
    """The git + DVC repository holding the datasets of one litops home."""

    def __init__(self, ws: Workspace, remote_url: str | None = None, remote_options: dict[str, Any] | None = None) -> None:
        """remote_options: extra keys of the DVC remote section, e.g. {"endpointurl": ..., "region": ...} for S3."""
        self.ws = ws
        self.root = ws.data_repo
        self.remote_url = remote_url or str(ws.dvc_remote)
        self.remote = {"url": self.remote_url, **(remote_options or {})}

    # ------------------------------------------------------------------ helpers

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        p = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True, env=env)
        if check and p.returncode != 0:
            raise DataRepoError(f"git {' '.join(args)} failed in {self.root}: {(p.stderr or p.stdout).strip()[:300]}")
        return p

    @contextlib.contextmanager
    def _repo(self) -> Iterator[Any]:
        """An open dvc Repo; DVC's hints ("To track the changes with git...") are muted and
        anything DVC prints goes to stderr (stdout carries the LITOPS_RESULT line)."""
        _quiet_dvc()
        from dvc.repo import Repo

        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), Repo(str(self.root)) as repo:
            # DVC 3.67 trips pygtrie's "_NoneStep.value" DeprecationWarning on every add.
            warnings.simplefilter("ignore", DeprecationWarning)
            repo.scm_context.quiet = True
            yield repo

    @property
    def site_cache_dir(self) -> str:
        return str(self.root / ".dvc" / "tmp" / "site-cache")

    def dvc_file(self, name: str) -> Path:
        return self.root / "datasets" / f"{name}.dvc"

    def git_sha(self) -> str | None:
        p = self._git("rev-parse", "HEAD", check=False)
        return p.stdout.strip() if p.returncode == 0 else None

    def _commit_if_staged(self, message: str) -> bool:
        if self._git("diff", "--cached", "--quiet", check=False).returncode == 0:
            return False
        self._git("commit", "-q", "--no-verify", "-m", message)
        return True

    # ------------------------------------------------------------------ API

    def ensure(self) -> "DataRepo":
        """Create (once) the git + DVC repo and its default local remote; idempotent."""
        _quiet_dvc()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "datasets").mkdir(exist_ok=True)
        if not (self.root / ".git").exists():
            self._git("init", "-q", "-b", "main")
        for k, v in (("user.name", GIT_USER[0]), ("user.email", GIT_USER[1]), ("commit.gpgsign", "false")):
            if self._git("config", "--local", "--get", k, check=False).stdout.strip() != v:
                self._git("config", "--local", k, v)
        gi = self.root / ".gitignore"
        if not gi.is_file() or gi.read_text() != GITIGNORE:
            gi.write_text(GITIGNORE)
        if not (self.root / ".dvc" / "config").is_file():
            from dvc.repo import Repo

            # Keep DVC's site cache (state db, indexes) under the repo from the start.
            prev = os.environ.get("DVC_SITE_CACHE_DIR")
            os.environ["DVC_SITE_CACHE_DIR"] = self.site_cache_dir
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    Repo.init(str(self.root)).close()
            except Exception as e:  # noqa: BLE001
                raise DataRepoError(f"dvc init failed in {self.root}: {e}") from None
            finally:
                if prev is None:
                    os.environ.pop("DVC_SITE_CACHE_DIR", None)
                else:
                    os.environ["DVC_SITE_CACHE_DIR"] = prev
        if self.remote_url.startswith(("/", ".")) or "://" not in self.remote_url:
            Path(self.remote_url).mkdir(parents=True, exist_ok=True)
        self._configure()
        self._git("add", ".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
        self._commit_if_staged("litops: initialise the data repo")
        return self

    def _configure(self) -> None:
        """Repo config (committed): analytics off, no autostage. Local config (this
        machine only, not committed): the default remote and DVC's site cache under the
        repo, so a clone on a pod can point at another remote without a commit."""
        from dvc.config import Config

        cfg = Config(dvc_dir=str(self.root / ".dvc"), validate=False)
        core = cfg.load_one("repo").get("core", {})
        if str(core.get("analytics")).lower() != "false" or str(core.get("autostage")).lower() != "false":
            with cfg.edit("repo") as conf:
                conf["core"]["analytics"] = False
                conf["core"]["autostage"] = False
        local = cfg.load_one("local")
        lcore = local.get("core", {})
        if (
            lcore.get("remote") != REMOTE_NAME
            or lcore.get("site_cache_dir") != self.site_cache_dir
            or dict(local.get("remote", {}).get(REMOTE_NAME, {})) != self.remote
        ):
            with cfg.edit("local") as conf:
                conf["core"]["remote"] = REMOTE_NAME
                conf["core"]["site_cache_dir"] = self.site_cache_dir
                conf["remote"][REMOTE_NAME] = dict(self.remote)

    def version(self, dataset_name: str, push: bool = True) -> dict[str, Any]:
        """`dvc add` the dataset dir, commit the .dvc file, push to the remote.

        Returns {"name", "data_version", "dataset_dir", "committed", "git_sha", "pushed",
        "seconds"}; data_version is the .dvc file's md5 (`<hash>.dir`).
        """
        t0 = time.perf_counter()
        self.ensure()
        dataset_dir = self.ws.dataset_dir(dataset_name)
        if not dataset_dir.is_dir() or read_dataset_json(dataset_dir) is None:
            raise UserError(f"no dataset '{dataset_name}' at {dataset_dir} (run `litops data synth` or `litops data add PATH`)")
        partial = list(dataset_dir.rglob("*.partial"))
        for p in partial:  # leftovers of an interrupted write never enter a version
            p.unlink()
        with self._repo() as repo:
            try:
                repo.add([str(dataset_dir)])
            except Exception as e:  # noqa: BLE001
                raise DataRepoError(f"dvc add {dataset_dir} failed: {e}") from None
            dvcfile = self.dvc_file(dataset_name)
            data_version = version_of_dvc_file(dvcfile)
            if not data_version:
                raise DataRepoError(f"dvc add wrote no md5 to {dvcfile}")
            self._git("add", str(dvcfile.relative_to(self.root)), "datasets/.gitignore")
            targets = [str(dvcfile)] + self._add_features(repo, dataset_name)  # litops-lit: locked-tower feature caches
            committed = self._commit_if_staged(f"data: {dataset_name} {data_version}")
            pushed = 0
            if push:
                try:
                    pushed = repo.push(targets=targets, remote=REMOTE_NAME)
                except Exception as e:  # noqa: BLE001
                    raise DataRepoError(f"dvc push to {self.remote_url} failed: {e}") from None
        return {
            "name": dataset_name,
            "data_version": data_version,
            "dataset_dir": str(dataset_dir),
            "committed": committed,
            "git_sha": self.git_sha(),
            "pushed": int(pushed or 0),
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def features_dir(self, dataset_name: str) -> Path:  # litops-lit: see litops.train.feature_cache
        return self.root / "features" / dataset_name

    def _add_features(self, repo: Any, dataset_name: str) -> list[str]:
        """litops-lit: `dvc add features/<name>` (the locked-tower feature caches that training wrote beside
        the dataset), staged for the same commit; returns the .dvc path to push, or [] when there are none."""
        fdir = self.features_dir(dataset_name)
        if not fdir.is_dir() or not any(fdir.glob("*.pt")):
            return []
        try:
            repo.add([str(fdir)])
        except Exception as e:  # noqa: BLE001
            raise DataRepoError(f"dvc add {fdir} failed: {e}") from None
        fdvc = fdir.parent / f"{dataset_name}.dvc"
        self._git("add", str(fdvc.relative_to(self.root)), "features/.gitignore")
        return [str(fdvc)]

    def current_version(self, dataset_name: str) -> str | None:
        return version_of_dvc_file(self.dvc_file(dataset_name))

    def pull(self, dataset_name: str, data_version: str | None = None) -> dict[str, Any]:
        """Restore datasets/<name> from the remote.

        With `data_version` (a `<hash>.dir` md5), restore that version even if this repo
        has never seen it (a fresh machine / pod sharing only the remote): the .dvc file is
        rewritten to point at it (and committed).
        """
        t0 = time.perf_counter()
        self.ensure()
        dvcfile = self.dvc_file(dataset_name)
        if data_version is not None:
            if not data_version.endswith(".dir") or len(data_version) != 36:
                raise UserError(f"bad data version '{data_version}' (expected '<32 hex>.dir')")
            if self.current_version(dataset_name) != data_version:
                import yaml

                dvcfile.write_text(yaml.safe_dump({"outs": [{"md5": data_version, "hash": "md5", "path": dataset_name}]}, sort_keys=False))
                self._ensure_ignored(dataset_name)
                self._git("add", str(dvcfile.relative_to(self.root)), "datasets/.gitignore")
                self._commit_if_staged(f"data: checkout {dataset_name} {data_version}")
        elif not dvcfile.is_file():
            raise UserError(f"dataset '{dataset_name}' is not versioned in {self.root} (pass a data version to pull)")
        from dvc.exceptions import CheckoutError

        with self._repo() as repo:
            try:
                stats = repo.pull(targets=[str(dvcfile)], remote=REMOTE_NAME, force=True)
                fdvc = self.features_dir(dataset_name).parent / f"{dataset_name}.dvc"  # litops-lit
                if fdvc.is_file():  # the feature caches travel with the data; a missing one is recomputed
                    try:
                        repo.pull(targets=[str(fdvc)], remote=REMOTE_NAME, force=True)
                    except Exception as e:  # noqa: BLE001
                        print(f"feature caches not restored ({e}); training recomputes them", file=sys.stderr)
            except CheckoutError as e:
                raise DataRepoError(f"dvc pull of {dataset_name}: some files are missing from {self.remote_url}: {e}") from None
            except Exception as e:  # noqa: BLE001
                raise DataRepoError(f"dvc pull of {dataset_name} from {self.remote_url} failed: {e}") from None
        dataset_dir = self.ws.dataset_dir(dataset_name)
        if read_dataset_json(dataset_dir) is None:
            raise DataRepoError(f"dvc pull restored no dataset.json in {dataset_dir}")
        # Repo.pull returns {"stats": {"fetched": n, "added": [...], "modified": [...], ...}}
        counts = stats.get("stats", {}) if isinstance(stats, dict) else {}
        fetched = counts.get("fetched", 0)
        return {
            "name": dataset_name,
            "data_version": self.current_version(dataset_name),
            "dataset_dir": str(dataset_dir),
            "fetched": int(fetched or 0),
            "git_sha": self.git_sha(),
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def _ensure_ignored(self, dataset_name: str) -> None:
        gi = self.root / "datasets" / ".gitignore"
        line = f"/{dataset_name}"
        lines = gi.read_text().splitlines() if gi.is_file() else []
        if line not in lines:
            gi.write_text("\n".join(lines + [line]) + "\n")
