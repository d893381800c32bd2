"""Registry credentials, found where podman, skopeo and docker look (containers-auth.json(5)):
--authfile, else $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, else
$DOCKER_CONFIG/config.json or ~/.docker/config.json. An entry is `auths.<key>.auth`
(base64 of user:password) or a credential helper (`credHelpers`, `credsStore`). The secret
is never put in a message, an exception or a log."""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from framework.errors import UserError
from framework.publish.reference import DOCKER_HUB

HELPER_TIMEOUT = 30
_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io",
             "https://index.docker.io/v1/")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never in a repr, so never in a traceback either
    source: str = ""  # where they came from, for messages

    def basic(self) -> str:
        return "Basic " + base64.b64encode(
            f"{self.username}:{self.password}".encode()).decode()


def auth_files(authfile: Path | None = None) -> list[Path]:
    """The files searched, in order (the first that has an entry for the registry wins)."""
    if authfile is not None:
        return [authfile]
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker_config = os.environ.get("DOCKER_CONFIG")
    files.append(Path(docker_config) / "config.json" if docker_config
                 else Path.home() / ".docker" / "config.json")
    return files


def _normalised(key: str) -> str:
    """`https://host/v2/` and `host` name one registry; `host/ns` is a repository scope."""
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):].split("/", 1)[0]
    return key.rstrip("/")


def _matches(key: str, registry: str, repository: str) -> int:
    """How specific the match of an auth file key is (0: none)."""
    if registry == DOCKER_HUB and key in _HUB_KEYS:
        return 1
    key = _normalised(key)
    if key == registry:
        return 1
    scope = f"{registry}/{repository}"
    if key.startswith(f"{registry}/") and (scope == key or scope.startswith(key + "/")):
        return 1 + key.count("/")
    return 0


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        # The content is not quoted: it holds secrets.
        raise UserError(f"the registry auth file {path} cannot be read as JSON "
                        f"({type(err).__name__}): fix it, or log in again "
                        "(`podman login` / `docker login`)") from None
    if not isinstance(data, dict):
        raise UserError(f"the registry auth file {path} is not a JSON object: fix it, or "
                        "log in again (`podman login` / `docker login`)")
    return data


def _from_auth(entry: object, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict) or not entry.get("auth"):
        return None
    try:
        user, sep, password = base64.b64decode(str(entry["auth"]), validate=True) \
            .decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        sep = ""
    if not sep or not user:
        raise UserError(f"the entry for {key} in {path} has an `auth` that is not base64 of "
                        "user:password: log in again (`podman login` / `docker login`)")
    return Credentials(user, password, f"{path} ({key})")


def _from_helper(helper: str, registry: str, path: Path) -> Credentials | None:
    program = f"docker-credential-{helper}"
    if not shutil.which(program):
        raise UserError(f"{path} names the credential helper `{helper}` for {registry}, "
                        f"and {program} is not on PATH: install it, or set "
                        "REGISTRY_AUTH_FILE to a file with the credentials")
    server = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
    try:
        done = subprocess.run([program, "get"], input=server, capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise UserError(f"the credential helper {program} did not answer in "
                        f"{HELPER_TIMEOUT} s: check it (`{program} list`)") from None
    if done.returncode != 0:
        if "credentials not found" in done.stdout + done.stderr:
            return None
        raise UserError(f"the credential helper {program} failed for {registry} "
                        f"(exit {done.returncode}): check it (`{program} list`)")
    try:
        answer = json.loads(done.stdout)
        return Credentials(str(answer["Username"]), str(answer["Secret"]),
                           f"{program} ({path})")
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"the credential helper {program} gave no Username/Secret for "
                        f"{registry}: check it (`{program} list`)") from None


def find(registry: str, repository: str, authfile: Path | None = None) -> Credentials | None:
    """The credentials for a repository of `registry`, or None when no file has any."""
    for path in auth_files(authfile):
        data = _read(path)
        if data is None:
            if authfile is not None:
                raise UserError(f"the auth file {path} does not exist: give an existing "
                                "file to --authfile")
            continue
        auths = data.get("auths")
        if isinstance(auths, dict):
            ranked = sorted(((_matches(str(k), registry, repository), str(k)) for k in auths),
                            reverse=True)
            for rank, key in ranked:
                if rank == 0:
                    break
                found = _from_auth(auths[key], path, key)
                if found:
                    return found
        helpers = data.get("credHelpers")
        if isinstance(helpers, dict) and isinstance(helpers.get(registry), str):
            return _from_helper(helpers[registry], registry, path)
        store = data.get("credsStore")
        if isinstance(store, str) and store:
            found = _from_helper(store, registry, path)
            if found:
                return found
    return None


def searched(authfile: Path | None = None) -> str:
    return ", ".join(str(p) for p in auth_files(authfile))
