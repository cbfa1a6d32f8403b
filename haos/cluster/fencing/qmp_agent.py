"""``fence_haos_qmp``: a fence agent for QEMU guests, over each guest's QMP monitor.

It speaks the fence-agents protocol (see :mod:`haos.cluster.fencing.agent`), so
:class:`~haos.cluster.fencing.agent.FenceAgentFencer` runs it like any agent of Debian's
``fence-agents``: options as ``key=value`` lines on stdin (or fence-agents style arguments,
``fence_haos_qmp -o status --qmp-socket PATH``), the answer in the exit code: 0 done (for
``status``: on), 2 for ``status``: off, 1 failed, with the reason in an ``ERROR:`` line.

Where the guest's monitor is (one of):

* ``qmp_socket=PATH``: its unix socket;
* ``qmp_dir=DIR`` with ``plug=NAME``: the unix socket ``DIR/NAME.sock``;
* ``ip=HOST`` with ``ipport=PORT``: a monitor over TCP (or a forwarder to one).

Actions:

* ``off``: with ``off_method=quit`` (the default) QEMU exits at once (``quit``); done once
  its monitor has closed and no QEMU listens there any more. With ``off_method=stop`` the
  vCPUs stop at once and the machine is reset while stopped (``stop``, ``system_reset``), so
  ``on`` boots it afresh; done once ``query-status`` says it does not run. A guest whose QEMU
  is already gone is off: success.
* ``on``: ``cont`` (after a reset if the guest had shut down); fails if no QEMU runs.
* ``reboot``: ``system_reset`` (then ``cont`` if it was stopped); done once QEMU reported the
  ``RESET`` and the guest runs. A guest whose QEMU is gone counts as fenced (it is off) and
  only a warning says it could not be powered on, as fence-agents do.
* ``status``: ``query-status``; no QEMU is off. ``monitor``: whether the status can be told.
* ``list``/``list-status``: the guests of ``qmp_dir``. ``metadata``, ``validate-all``.

``login_timeout`` bounds connecting and the greeting, ``power_timeout`` the action itself
(seconds; defaults 5 and 20): keep the fencer's own timeout above their sum.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from xml.sax.saxutils import escape, quoteattr

from haos.cluster.fencing.qmp_monitor import Absent, Closed, Endpoint, Monitor, Refused
from haos.cluster.fencing.types import FenceError
from haos.errors import UsageError

log = logging.getLogger(__name__)

NAME = "fence_haos_qmp"
EXIT_OK, EXIT_ERROR, EXIT_OFF = 0, 1, 2
OFF_METHODS = ("quit", "stop")
SUFFIX = ".sock"  # a guest's socket in qmp_dir: <plug>.sock
_PLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RECHECK = 0.05  # seconds between looks for a QEMU that is going away

# (name, getopt, type, default, description): every parameter, in metadata order.
PARAMETERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("action", "-o, --action=[action]", "string", "reboot", "Fencing action"),
    ("plug", "-n, --plug=[name]", "string", "", "The guest: its socket in qmp_dir"),
    ("port", "--port=[name]", "string", "", "The guest (obsolete name of plug)"),
    ("qmp_socket", "--qmp-socket=[path]", "string", "", "The guest's QMP unix socket"),
    ("qmp_dir", "--qmp-dir=[path]", "string", "", "A directory of QMP sockets, <plug>.sock"),
    ("ip", "-a, --ip=[ip]", "string", "", "Host of a QMP monitor over TCP"),
    ("ipaddr", "--ipaddr=[ip]", "string", "", "Host of a QMP monitor (obsolete name of ip)"),
    ("ipport", "-u, --ipport=[port]", "integer", "", "TCP port of the QMP monitor"),
    ("off_method", "--off-method=[method]", "select", "quit", "off: quit QEMU, or stop+reset"),
    ("power_timeout", "--power-timeout=[seconds]", "second", "20", "Seconds for the action"),
    ("login_timeout", "--login-timeout=[seconds]", "second", "5", "Seconds to connect"),
)
ALIASES = {"port": "plug", "ipaddr": "ip", "option": "action"}
IGNORED = frozenset({"nodename"})  # Pacemaker passes it to every agent
ACTIONS = ("on", "off", "reboot", "status", "monitor", "list", "list-status", "metadata")
ACTIONS_ALL = (*ACTIONS, "validate-all")
_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Options:
    """The agent's parsed options; :meth:`parse` checks them (UsageError naming the key)."""

    action: str = "reboot"
    plug: str = ""
    qmp_socket: str = ""
    qmp_dir: str = ""
    ip: str = ""
    ipport: int = 0
    off_method: str = "quit"
    power_timeout: float = 20.0
    login_timeout: float = 5.0

    @classmethod
    def parse(cls, values: dict[str, str]) -> Options:
        action = values.get("action", "reboot")
        if action not in ACTIONS_ALL:
            raise UsageError(f"action must be one of {', '.join(ACTIONS_ALL)}, not {action!r}")
        method = values.get("off_method", "quit")
        if method not in OFF_METHODS:
            raise UsageError(f"off_method must be quit or stop, not {method!r}")
        plug = values.get("plug", "")
        if plug and not _PLUG.fullmatch(plug):
            raise UsageError(f"plug {plug!r} is not a guest name (letters, digits, _ . -)")
        return cls(
            action,
            plug,
            values.get("qmp_socket", ""),
            values.get("qmp_dir", ""),
            values.get("ip", ""),
            _number(values, "ipport", 0, int),
            method,
            _number(values, "power_timeout", 20.0, float),
            _number(values, "login_timeout", 5.0, float),
        )

    def endpoint(self) -> Endpoint:
        """Where the guest's monitor is; UsageError if the options do not say it once."""
        given = [k for k in ("qmp_socket", "qmp_dir", "ip") if getattr(self, k)]
        if len(given) != 1:
            raise UsageError("give exactly one of qmp_socket, qmp_dir (with plug), ip")
        if self.qmp_socket:
            return Endpoint(path=self.qmp_socket)
        if self.qmp_dir:
            if not self.plug:
                raise UsageError("qmp_dir needs plug: the guest whose socket to use")
            return Endpoint(path=os.path.join(self.qmp_dir, self.plug + SUFFIX))
        if not 0 < self.ipport < 65536:
            raise UsageError("ip needs ipport, a TCP port 1..65535")
        return Endpoint(host=self.ip, port=self.ipport)


def _number(values: dict[str, str], key: str, default: _N, kind: type[_N]) -> _N:
    text = values.get(key, "")
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"{key} must be a number, not {text!r}") from None
    if not value > 0:
        raise UsageError(f"{key} must be positive, not {text!r}")
    return value


def read_options(text: str) -> dict[str, str]:
    """The ``key=value`` lines of stdin as a mapping (aliases resolved, ``-`` read as
    ``_``); a line that is not an option of this agent is logged and ignored, as
    fence-agents do."""
    known = {name for name, *_ in PARAMETERS}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known | ALIASES.keys() | IGNORED:
            log.warning("Parse error: Ignoring unknown option '%s'", line)
            continue
        if key not in IGNORED:
            values[ALIASES.get(key, key)] = value.strip()
    return values


def arguments(argv: Sequence[str]) -> dict[str, str]:
    """fence-agents style arguments (``-o off -n guest --qmp-dir DIR``) as options."""
    p = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    for name, getopt, *_ in PARAMETERS:
        flags = [f.split("=")[0].strip() for f in getopt.split(",")]
        p.add_argument(*flags, dest=name, default=None)
    given = vars(p.parse_args(list(argv)))
    values = {k: v for k, v in given.items() if v is not None}
    for old, new in ALIASES.items():
        if old in values:
            values.setdefault(new, values.pop(old))
    return values


def metadata() -> str:
    """The fence-agents XML: parameters (with their ``getopt``) and actions."""
    out = [
        '<?xml version="1.0" ?>',
        f'<resource-agent name="{NAME}" shortdesc="Fence agent for QEMU guests over QMP">',
        "<longdesc>Powers a QEMU guest off (quit, or stop and reset), on (cont) or resets it,"
        " over its QMP monitor: a unix socket, one of a directory of them, or TCP.</longdesc>",
        "<vendor-url>https://www.qemu.org/docs/master/interop/qmp-spec.html</vendor-url>",
        "<parameters>",
    ]
    for name, getopt, kind, default, text in PARAMETERS:
        required = "1" if name == "action" else "0"
        obsoletes = next((f' obsoletes="{o}"' for o, n in ALIASES.items() if n == name), "")
        out.append(f'\t<parameter name="{name}" unique="0" required="{required}"{obsoletes}>')
        out.append(f'\t\t<getopt mixed="{getopt}" />')
        dflt = f" default={quoteattr(default)}" if default else ""
        if kind == "select":
            out.append(f'\t\t<content type="select"{dflt}>')
            out += [f'\t\t\t<option value="{m}" />' for m in OFF_METHODS]
            out.append("\t\t</content>")
        else:
            out.append(f'\t\t<content type="{kind}"{dflt} />')
        out.append(f'\t\t<shortdesc lang="en">{escape(text)}</shortdesc>')
        out.append("\t</parameter>")
    out.append("</parameters>")
    out.append("<actions>")
    out += [f'\t<action name="{a}" />' for a in ACTIONS_ALL]
    out += ["</actions>", "</resource-agent>"]
    return "\n".join(out) + "\n"


class Guest:
    """The actions on one guest's monitor, each bounded by the options' timeouts."""

    def __init__(self, options: Options, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.endpoint = options.endpoint()
        self._clock = clock
        self._deadline = clock() + options.login_timeout + options.power_timeout

    def _open(self) -> Monitor:
        login = min(self._clock() + self.options.login_timeout, self._deadline)
        return Monitor.open(self.endpoint, login)

    def status(self) -> bool:
        """Whether the guest runs; False if its QEMU is gone."""
        try:
            with self._open() as monitor:
                return monitor.running(self._deadline)
        except Absent:
            return False

    def off(self) -> str:
        try:
            monitor = self._open()
        except Absent as e:
            return f"already off: {e}"
        with monitor:
            if self.options.off_method == "stop":
                monitor.execute("stop", self._deadline)
                monitor.execute("system_reset", self._deadline)
                if monitor.running(self._deadline):
                    raise FenceError(f"{self.endpoint}: the guest still runs after stop")
                return "vCPUs stopped, machine reset"
            with contextlib.suppress(Closed):  # QEMU may close the monitor before it answers
                monitor.execute("quit", self._deadline)
            monitor.wait_closed(self._deadline)
        self._wait_gone()
        return "QEMU quit"

    def _wait_gone(self) -> None:
        """Until no QEMU serves the monitor any more (its socket closed or removed).

        Called after QEMU took ``quit`` and closed this monitor: then a TCP address that
        refuses connections is gone too (alone, a refusal would prove nothing)."""
        while True:
            try:
                Monitor.open(self.endpoint, min(self._clock() + 1.0, self._deadline)).close()
            except (Absent, Refused):
                return
            except FenceError:
                pass  # going away: closed during the greeting, or no greeting yet
            if self._clock() >= self._deadline:
                raise FenceError(f"{self.endpoint}: QEMU still serves its monitor after quit")
            time.sleep(_RECHECK)

    def on(self) -> str:
        try:
            monitor = self._open()
        except Absent as e:
            raise FenceError(f"cannot power on: {e}") from e
        with monitor:
            return self._run(monitor, reset=False)

    def reboot(self) -> str:
        try:
            monitor = self._open()
        except Absent as e:
            log.warning("guest is off and cannot be powered on: %s", e)
            return f"off (cannot be powered on: {e})"
        with monitor:
            return self._run(monitor, reset=True)

    def _run(self, monitor: Monitor, reset: bool) -> str:
        """Reset the guest (if ``reset`` or it had shut down), let it run, confirm it runs."""
        status = monitor.execute("query-status", self._deadline)
        state = status.get("status", "") if isinstance(status, dict) else ""
        if reset or state in ("shutdown", "guest-panicked"):
            monitor.execute("system_reset", self._deadline)
            monitor.wait_event("RESET", self._deadline)
        if not monitor.running(self._deadline):
            monitor.execute("cont", self._deadline)
        if not monitor.running(self._deadline):
            raise FenceError(f"{self.endpoint}: the guest does not run after cont")
        return "reset, running" if reset else "running"


def guests(qmp_dir: str) -> list[str]:
    """The plugs of ``qmp_dir``: the names of its ``*.sock`` sockets, sorted."""
    try:
        entries = sorted(Path(qmp_dir).iterdir())
    except OSError as e:
        raise FenceError(f"cannot list {qmp_dir}: {e.strerror}") from e
    names = []
    for entry in entries:
        try:
            is_socket = stat.S_ISSOCK(entry.lstat().st_mode)
        except OSError:
            continue  # removed meanwhile
        if is_socket and entry.name.endswith(SUFFIX):
            names.append(entry.name[: -len(SUFFIX)])
    return names


def act(options: Options) -> int:
    """Carry out ``options.action``; the exit code. FenceError/UsageError for failures."""
    action = options.action
    if action == "metadata":
        sys.stdout.write(metadata())
        return EXIT_OK
    if action == "monitor" and options.qmp_dir and not options.plug:
        guests(options.qmp_dir)  # the device is the directory: it can be listed
        return EXIT_OK
    if action in ("list", "list-status"):
        if not options.qmp_dir:
            raise UsageError(f"{action} needs qmp_dir")
        for plug in guests(options.qmp_dir):
            if action == "list":
                print(f"{plug},")
                continue
            on = Guest(Options(plug=plug, qmp_dir=options.qmp_dir)).status()
            print(f"{plug},,{'ON' if on else 'OFF'}")
        return EXIT_OK
    guest = Guest(options)  # checks the options: validate-all ends here
    if action == "validate-all":
        return EXIT_OK
    if action in ("status", "monitor"):
        on = guest.status()
        print(f"Status: {'ON' if on else 'OFF'}")
        return EXIT_OFF if action == "status" and not on else EXIT_OK
    detail = {"off": guest.off, "on": guest.on, "reboot": guest.reboot}[action]()
    print(f"Success: {action}: {detail}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point: options from the arguments, or from stdin without arguments."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s"
    )
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        values = arguments(args) if args else read_options(sys.stdin.read())
        return act(Options.parse(values))
    except (UsageError, FenceError) as e:
        log.error("%s", e)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
