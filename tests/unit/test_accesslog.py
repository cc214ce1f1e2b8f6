"""The access log file: reopened by path after a rotation, kept when it cannot be."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.accesslog import AccessLog


def paths(path: Path) -> list[str | None]:
    return [json.loads(line)["path"] for line in path.read_text().splitlines()]


def test_reopen_follows_the_path_and_keeps_the_old_file_when_it_cannot(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = AccessLog(str(logs / "access.log"))
    log.write_refused("127.0.0.1", 400, b"GET", b"/one")
    (logs / "access.log").rename(logs / "access.log.1")
    assert log.reopen()
    log.write_refused("127.0.0.1", 400, b"GET", b"/two")
    assert paths(logs / "access.log.1") == ["/one"]
    assert paths(logs / "access.log") == ["/two"]

    # The directory is gone: the file already open keeps the lines.
    logs.rename(tmp_path / "moved")
    assert not log.reopen()
    log.write_refused("127.0.0.1", 400, b"GET", b"/three")
    assert paths(tmp_path / "moved" / "access.log") == ["/two", "/three"]
    log.close()


def test_standard_output_is_not_reopened() -> None:
    assert not AccessLog(True).reopen()
    assert not AccessLog(False).reopen()
