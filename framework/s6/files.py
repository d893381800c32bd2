"""`image_files(cfg)`: the s6 init, service directories and status command as ImageFiles
(registered in framework.builder.generated.GENERATORS)."""

from __future__ import annotations

from typing import Any

from framework.image_files import ImageFile
from framework.s6 import INIT, NOTIFY_RECORD, STATUS, scripts
from framework.s6.plan import Plan, Service, enabled_services, plan

EXEC = 0o755
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\n"


def _file(path: str, text: str, mode: int = EXEC) -> ImageFile:
    return ImageFile(path, content=text.encode(), mode=mode)


def _dir(path: str) -> ImageFile:
    return ImageFile(path, kind="dir", mode=0o755)


def _long_run(service: Service) -> list[ImageFile]:
    base = f"/etc/s6/services/{service.name}"
    check = scripts.check(service)
    probe = f"{base}/check" if check else None
    files = [
        _dir(base),
        _file(f"{base}/run", scripts.run(service, probe)),
        _file(f"{base}/finish", scripts.finish(service)),
        # A daemon ignoring SIGTERM is killed after its stop timeout (milliseconds).
        _file(f"{base}/timeout-kill", f"{service.stop_timeout * 1000}\n", 0o644),
        _dir(f"{base}/log"),
        _file(f"{base}/log/run", scripts.log(service)),
    ]
    if check:
        files.append(_file(f"{base}/check", check))
    if scripts.notifies(service):
        files.append(_file(f"{base}/notification-fd", "3\n", 0o644))
    return files


def _oneshot(service: Service) -> list[ImageFile]:
    base = f"/etc/s6/oneshot/{service.name}"
    return [_dir(base), _file(f"{base}/run", scripts.run(service, None)),
            _file(f"{base}/log", scripts.log(service))]


def files_for(p: Plan) -> list[ImageFile]:
    files = [
        _dir("/etc/s6"),
        _file(INIT, scripts.INIT),
        _file("/etc/s6/stage2", scripts.stage2(p)),
        _file("/etc/s6/lib.sh", scripts.LIB, 0o644),
        _file("/etc/s6/prefix", scripts.PREFIX),
        _file(STATUS, scripts.status(p)),
        _dir("/etc/s6/scan"),
        _dir("/etc/s6/scan/.s6-svscan"),
        _file("/etc/s6/scan/.s6-svscan/finish", scripts.FINISH_SVSCAN),
        _file("/etc/s6/scan/.s6-svscan/SIGTERM", scripts.signal_handler(143, "SIGTERM")),
        _file("/etc/s6/scan/.s6-svscan/SIGINT", scripts.signal_handler(130, "SIGINT")),
        _dir("/etc/s6/services"),
        _dir("/etc/s6/oneshot"),
    ]
    if any(s.user for s in p.services):
        # s6-setuidgid reads the groups through glibc's NSS, which fails without this file
        # (Debian creates it in a maintainer script, and those do not run).
        files.append(_file("/etc/nsswitch.conf", NSSWITCH, 0o644))
    if any(s.readiness == "sd-notify" for s in p.long_runs):
        files.append(_file(NOTIFY_RECORD, scripts.NOTIFY_RECORD_SCRIPT))
    for service in p.long_runs:
        files += _long_run(service)
        if scripts.scanned_from_start(p):
            files.append(ImageFile(f"/etc/s6/scan/{service.name}", kind="symlink",
                                   target=f"../services/{service.name}"))
    for service in [*p.pre, *p.post]:
        files += _oneshot(service)
    return files


def image_files(cfg: dict[str, Any]) -> list[ImageFile]:
    if not enabled_services(cfg):
        return []
    return files_for(plan(cfg))
