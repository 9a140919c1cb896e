"""Data versioning with DVC's Python API: the data repo at <home>/data (git + DVC).

Layout of the data repo:
    .dvc/            DVC config, committed: default remote `litops` -> <home>/dvc-remote
                     (or remote_url), so a `git clone` can `dvc pull`; config.local (not
                     committed): DVC's site cache; the cache
    datasets/<name>/ the dataset (tracked by DVC as one directory output)
    datasets/<name>.dvc  committed to git; its `md5` (`<hash>.dir`) is the data version
    quarantine/      rejected samples and ingest reports (git-ignored, never versioned)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from litops.core.component_cli import UserError
from litops.core.feature_store import features_root
from litops.core.workspace import Workspace

from .metadata import read_dataset_json

REMOTE_NAME = "litops"
CHECKOUTS = "data-checkouts"  # under the home, beside (not inside) the data repo
DATA_VERSION_RE = re.compile(r"^[0-9a-f]{32}\.dir$")
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

    import dvc  # noqa: F401 - its import sets up DVC's loggers (level INFO); lower them after

    log = logging.getLogger("dvc")
    if log.getEffectiveLevel() < logging.WARNING and not os.environ.get("LITOPS_DVC_VERBOSE"):
        log.setLevel(logging.WARNING)


@contextlib.contextmanager
def open_dvc_repo(root: Path) -> Iterator[Any]:
    """An open dvc Repo; DVC's hints ("To track the changes with git...") are muted and
    anything DVC prints goes to stderr (stdout carries the LITOPS_RESULT line)."""
    _quiet_dvc()
    from dvc.repo import Repo

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), Repo(str(root)) as repo:
        # DVC 3.67 trips pygtrie's "_NoneStep.value" DeprecationWarning on every add.
        warnings.simplefilter("ignore", DeprecationWarning)
        repo.scm_context.quiet = True
        yield repo


@contextlib.contextmanager
def dvc_log_level(level: int) -> Iterator[None]:
    log = logging.getLogger("dvc")
    prev = log.level
    log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        yield
    finally:
        log.setLevel(prev)


def init_dvc(root: Path, site_cache_dir: str, no_scm: bool = False) -> None:
    """`dvc init`, keeping DVC's site cache (state db, indexes) under `root` from the start."""
    _quiet_dvc()
    from dvc.repo import Repo

    prev = os.environ.get("DVC_SITE_CACHE_DIR")
    os.environ["DVC_SITE_CACHE_DIR"] = site_cache_dir
    try:
        with contextlib.redirect_stdout(sys.stderr):
            Repo.init(str(root), no_scm=no_scm).close()
    except Exception as e:  # noqa: BLE001
        raise DataRepoError(f"dvc init failed in {root}: {e}") from None
    finally:
        if prev is None:
            os.environ.pop("DVC_SITE_CACHE_DIR", None)
        else:
            os.environ["DVC_SITE_CACHE_DIR"] = prev


def check_data_version(data_version: str) -> None:
    if not DATA_VERSION_RE.match(data_version):
        raise UserError(f"bad data version '{data_version}' (expected '<32 hex>.dir')")


def write_dvc_file(path: Path, data_version: str, out: str) -> None:
    import yaml

    path.write_text(yaml.safe_dump({"outs": [{"md5": data_version, "hash": "md5", "path": out}]}, sort_keys=False))


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

    def _repo(self) -> contextlib.AbstractContextManager[Any]:
        return open_dvc_repo(self.root)

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
            init_dvc(self.root, self.site_cache_dir)
        if self.remote_url.startswith(("/", ".")) or "://" not in self.remote_url:
            Path(self.remote_url).mkdir(parents=True, exist_ok=True)
        self._configure()
        self._git("add", ".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
        self._commit_if_staged("litops: initialise the data repo")
        return self

    def _configure(self) -> None:
        """Repo config (committed): analytics off, no autostage, the default remote with its
        S3 options (credentials come from the environment, never from here). Local config
        (this machine only): DVC's site cache under the repo."""
        from dvc.config import Config

        cfg = Config(dvc_dir=str(self.root / ".dvc"), validate=False)
        repo = cfg.load_one("repo")
        core = repo.get("core", {})
        if (
            str(core.get("analytics")).lower() != "false"
            or str(core.get("autostage")).lower() != "false"
            or core.get("remote") != REMOTE_NAME
            or dict(repo.get("remote", {}).get(REMOTE_NAME, {})) != self.remote
        ):
            with cfg.edit("repo") as conf:
                conf["core"]["analytics"] = False
                conf["core"]["autostage"] = False
                conf["core"]["remote"] = REMOTE_NAME
                conf["remote"][REMOTE_NAME] = dict(self.remote)
        local = cfg.load_one("local")
        lcore = local.get("core", {})
        # A remote left in config.local by older versions would override the committed one.
        stale = "remote" in lcore or REMOTE_NAME in local.get("remote", {})
        if stale or lcore.get("site_cache_dir") != self.site_cache_dir:
            with cfg.edit("local") as conf:
                conf["core"].pop("remote", None)
                conf["remote"].pop(REMOTE_NAME, None)
                conf["core"]["site_cache_dir"] = self.site_cache_dir

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
            targets = [str(dvcfile)] + self._add_features(repo, dataset_name)  # locked-tower feature caches
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

    def features_dir(self, dataset_name: str) -> Path:
        return Path(features_root(self.root / "datasets" / dataset_name))

    def _add_features(self, repo: Any, dataset_name: str) -> list[str]:
        """`dvc add features/<name>` (the locked-tower feature caches that training wrote beside
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
            check_data_version(data_version)
            if self.current_version(dataset_name) != data_version:
                write_dvc_file(dvcfile, data_version, dataset_name)
                self._ensure_ignored(dataset_name)
                self._git("add", str(dvcfile.relative_to(self.root)), "datasets/.gitignore")
                self._commit_if_staged(f"data: checkout {dataset_name} {data_version}")
        elif not dvcfile.is_file():
            raise UserError(f"dataset '{dataset_name}' is not versioned in {self.root} (pass a data version to pull)")
        from dvc.exceptions import CheckoutError

        with self._repo() as repo:
            try:
                stats = repo.pull(targets=[str(dvcfile)], remote=REMOTE_NAME, force=True)
                fdvc = self.features_dir(dataset_name).parent / f"{dataset_name}.dvc"
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

    def checkout_root(self, data_version: str) -> Path:
        return self.ws.home / CHECKOUTS / data_version.removesuffix(".dir")

    def checkout(self, dataset_name: str, data_version: str) -> dict[str, Any]:
        """Restore a data version into <home>/data-checkouts/<md5>/<name>/, leaving the data repo
        (its branch, .dvc files and working tree) as it is.

        That folder is a git-less DVC repo with one .dvc file pointing at the version; it shares
        the data repo's cache, so versions seen here copy from disk and others come from the remote.
        Checking out again restores any file changed since. Returns {"name", "data_version",
        "dataset_dir", "fetched", "seconds"}.
        """
        t0 = time.perf_counter()
        check_data_version(data_version)
        existed = self.checkout_root(data_version).is_dir()
        root = self._checkout_repo(data_version)
        dvcfile = root / f"{dataset_name}.dvc"
        write_dvc_file(dvcfile, data_version, dataset_name)
        try:
            stats = self._pull_version(root, dvcfile, data_version)
        except UserError:
            if not existed:  # leave no empty checkout of a version that could not be restored
                shutil.rmtree(root, ignore_errors=True)
            raise
        dataset_dir = root / dataset_name
        if read_dataset_json(dataset_dir) is None:
            raise DataRepoError(f"data version {data_version} holds no dataset.json (not a litops dataset)")
        return {
            "name": dataset_name,
            "data_version": data_version,
            "dataset_dir": str(dataset_dir),
            "fetched": int(stats.get("stats", {}).get("fetched", 0) if isinstance(stats, dict) else 0),
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def _checkout_repo(self, data_version: str) -> Path:
        """The git-less DVC repo of one checkout, configured with this repo's remote and cache."""
        from dvc.config import Config

        root = self.checkout_root(data_version)
        root.mkdir(parents=True, exist_ok=True)
        site_cache = str(root / ".dvc" / "tmp" / "site-cache")
        if not (root / ".dvc" / "config").is_file():
            init_dvc(root, site_cache, no_scm=True)
        with Config(dvc_dir=str(root / ".dvc"), validate=False).edit("repo") as conf:
            conf["core"].update({"analytics": False, "remote": REMOTE_NAME, "site_cache_dir": site_cache})
            conf["remote"][REMOTE_NAME] = dict(self.remote)
            if (self.root / ".dvc").is_dir():
                conf["cache"]["dir"] = str(self.root / ".dvc" / "cache")
        return root

    def _pull_version(self, root: Path, dvcfile: Path, data_version: str) -> Any:
        from dvc.exceptions import CheckoutError

        with open_dvc_repo(root) as repo, dvc_log_level(logging.ERROR):  # our one-line error says it all
            try:
                return repo.pull(targets=[str(dvcfile)], remote=REMOTE_NAME, force=True)
            except CheckoutError:
                raise UserError(f"data version {data_version} is not in the DVC remote {self.remote_url} "
                                "(or only part of it is)") from None
            except Exception as e:  # noqa: BLE001
                raise DataRepoError(f"dvc pull of {data_version} from {self.remote_url} failed: {e}") from None

    def _ensure_ignored(self, dataset_name: str) -> None:
        gi = self.root / "datasets" / ".gitignore"
        line = f"/{dataset_name}"
        lines = gi.read_text().splitlines() if gi.is_file() else []
        if line not in lines:
            gi.write_text("\n".join(lines + [line]) + "\n")
