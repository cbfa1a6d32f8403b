"""The CMF unit manager over systemd's D-Bus API (org.freedesktop.systemd1), with dbus-fast.

:class:`Systemd1` is the one typed proxy for the service: each method is one D-Bus call with
its signature written out, and D-Bus errors are translated into the haos error tree there.
:class:`SystemdUnits` implements :class:`haos.services.cmf.types.UnitManager` on top of it.
State changes come from ``PropertiesChanged`` signals on the unit objects: systemd sends the
type-specific interface (``Service``: Result) before the generic ``Unit`` one (ActiveState,
SubState), so an event is built when the ``Unit`` part arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from haos.errors import UnavailableError
from haos.services.cmf.types import (
    UNLOADED,
    ChangeFilter,
    Job,
    NoSuchUnit,
    PropertyValue,
    UnitChanged,
    UnitError,
    UnitExists,
    UnitState,
)

log = logging.getLogger(__name__)

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"
ALREADY_SUBSCRIBED = "org.freedesktop.systemd1.AlreadySubscribed"

# D-Bus types of the integer properties haos sets on transient units (systemd.resource-control,
# systemd.kill, systemd.service). An int property not listed here is refused: its type matters.
INT_PROPERTY_SIGNATURES: Mapping[str, str] = {
    "KillSignal": "i",
    "FinalKillSignal": "i",
    "RestartKillSignal": "i",
    "WatchdogSignal": "i",
    "Nice": "i",
    "OOMScoreAdjust": "i",
    "TimeoutStartUSec": "t",
    "TimeoutStopUSec": "t",
    "RestartUSec": "t",
    "RuntimeMaxUSec": "t",
    "WatchdogUSec": "t",
    "StartLimitIntervalUSec": "t",
    "StartLimitBurst": "u",
}

_UNAVAILABLE_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Timeout",
        "org.freedesktop.DBus.Error.TimedOut",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    }
)


class AlreadySubscribed(UnitError):
    """This bus connection is subscribed already: systemd keeps one subscription per
    connection, and answers a second ``Subscribe`` with this."""

    code = "already-subscribed"


def unit_path(name: str) -> str:
    """The object path of unit ``name``, escaped as systemd's bus_label_escape() does.

    Computed locally so a unit can be watched before it exists.
    """
    out = []
    for i, byte in enumerate(name.encode()):
        char = chr(byte)
        if char.isascii() and (char.isalpha() or (i > 0 and char.isdigit())):
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    return UNIT_PATH_PREFIX + ("".join(out) or "_")


def encode_properties(
    argv: Sequence[str], properties: Mapping[str, PropertyValue]
) -> list[tuple[str, Variant]]:
    """The ``a(sv)`` of StartTransientUnit: the given properties plus ExecStart from argv."""
    if not argv:
        raise ValueError("argv must name a program")
    if "ExecStart" in properties:
        raise ValueError("ExecStart comes from argv; do not pass it as a property")
    encoded = [(key, _variant(key, value)) for key, value in properties.items()]
    # a(sasb): path, argv (with argv[0]), ignore-failure.
    encoded.append(("ExecStart", Variant("a(sasb)", [[argv[0], list(argv), False]])))
    return encoded


def _variant(key: str, value: PropertyValue) -> Variant:
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        signature = INT_PROPERTY_SIGNATURES.get(key)
        if signature is None:
            raise ValueError(f"unknown D-Bus type for integer property {key}")
        return Variant(signature, value)
    if isinstance(value, str):
        return Variant("s", value)
    return Variant("as", list(value))


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise UnavailableError(f"systemd sent a non-string {what}: {value!r}")
    return value


class Systemd1:
    """Typed proxy for org.freedesktop.systemd1 on one connected bus."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus

    @property
    def bus(self) -> MessageBus:
        return self._bus

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        destination: str = SYSTEMD,
    ) -> list[Any]:
        """One method call; the reply body, or a haos error."""
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
        try:
            reply = await self._bus.call(msg)
        except Exception as e:  # dbus-fast raises plain exceptions for a broken connection
            raise UnavailableError(f"{member}: D-Bus connection failed: {e}") from e
        if reply is None:
            raise UnavailableError(f"{member}: no reply")
        if reply.message_type is MessageType.ERROR:
            raise _translate(member, reply.error_name or "", reply.body)
        return list(reply.body)

    async def start_transient_unit(
        self, name: str, mode: str, properties: list[tuple[str, Variant]]
    ) -> str:
        body = await self.call(
            MANAGER_PATH,
            MANAGER,
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [name, mode, [list(p) for p in properties], []],
        )
        return _str(body[0], "job path")

    async def stop_unit(self, name: str, mode: str) -> str:
        body = await self.call(MANAGER_PATH, MANAGER, "StopUnit", "ss", [name, mode])
        return _str(body[0], "job path")

    async def kill_unit(self, name: str, whom: str, signal: int) -> None:
        await self.call(MANAGER_PATH, MANAGER, "KillUnit", "ssi", [name, whom, signal])

    async def reset_failed_unit(self, name: str) -> None:
        await self.call(MANAGER_PATH, MANAGER, "ResetFailedUnit", "s", [name])

    async def get_unit(self, name: str) -> str:
        body = await self.call(MANAGER_PATH, MANAGER, "GetUnit", "s", [name])
        return _str(body[0], "unit path")

    async def subscribe(self) -> None:
        """Have systemd send unit signals to this connection. Idempotent: a connection that
        is subscribed already (however many watches share it) stays subscribed."""
        with contextlib.suppress(AlreadySubscribed):
            await self.call(MANAGER_PATH, MANAGER, "Subscribe")

    async def get_property(self, path: str, interface: str, name: str) -> Any:
        body = await self.call(path, PROPERTIES, "Get", "ss", [interface, name])
        value = body[0]
        return value.value if isinstance(value, Variant) else value

    async def system_state(self) -> str:
        return _str(await self.get_property(MANAGER_PATH, MANAGER, "SystemState"), "SystemState")

    async def add_match(self, rule: str) -> None:
        await self._bus_daemon("AddMatch", rule)

    async def remove_match(self, rule: str) -> None:
        await self._bus_daemon("RemoveMatch", rule)

    async def _bus_daemon(self, member: str, rule: str) -> None:
        await self.call(
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            member,
            "s",
            [rule],
            destination="org.freedesktop.DBus",
        )


def _translate(member: str, error_name: str, body: Sequence[Any]) -> Exception:
    text = body[0] if body and isinstance(body[0], str) else error_name
    what = f"{member}: {text}"
    if error_name == "org.freedesktop.systemd1.NoSuchUnit":
        return NoSuchUnit(what)
    if error_name == "org.freedesktop.systemd1.UnitExists":
        return UnitExists(what)
    if error_name == ALREADY_SUBSCRIBED:
        return AlreadySubscribed(what)
    if error_name in _UNAVAILABLE_ERRORS:
        return UnavailableError(what)
    return UnitError(f"{what} ({error_name})")


async def _until_disconnected(bus: MessageBus) -> None:
    with contextlib.suppress(Exception):  # ended by an error, or cleanly: gone either way
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # unannotated


def _properties_changed_rule(path: str) -> str:
    return (
        f"type='signal',sender='{SYSTEMD}',path='{path}',"
        f"interface='{PROPERTIES}',member='PropertiesChanged'"
    )


class SystemdUnits:
    """:class:`~haos.services.cmf.types.UnitManager` over systemd on a connected bus.

    ``clock`` stamps events (``UnitChanged.at``); it must be monotonic.
    """

    def __init__(self, bus: MessageBus, clock: Callable[[], float] = time.monotonic) -> None:
        self._systemd = Systemd1(bus)
        self._clock = clock
        # systemd tracks subscribers per connection, and this object owns one connection:
        # its watches (one per component of the node, opened at once) share a subscription.
        self._subscribing = asyncio.Lock()
        self._subscribed = False
        self._lost: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, address: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> SystemdUnits:
        """Connect to the bus at ``address`` (e.g. ``unix:path=/run/dbus/system_bus_socket``),
        or to the default system bus. The caller disconnects ``units.systemd.bus``.
        """
        try:
            bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        except Exception as e:
            raise UnavailableError(f"cannot connect to D-Bus at {address or 'system'}: {e}") from e
        return cls(bus, clock)

    @property
    def systemd(self) -> Systemd1:
        return self._systemd

    async def start_transient(
        self, name: str, argv: Sequence[str], properties: Mapping[str, PropertyValue] | None = None
    ) -> Job:
        encoded = encode_properties(argv, properties or {})
        path = await self._systemd.start_transient_unit(name, "fail", encoded)
        log.debug("started transient unit %s: job %s", name, path)
        return Job(name, path)

    async def stop(self, name: str) -> Job:
        return Job(name, await self._systemd.stop_unit(name, "replace"))

    async def kill(self, name: str, signal: int) -> None:
        await self._systemd.kill_unit(name, "all", signal)

    async def reset_failed(self, name: str) -> None:
        await self._systemd.reset_failed_unit(name)

    async def active_state(self, name: str) -> str:
        return (await self._state(name)).active_state

    async def _state(self, name: str) -> UnitState:
        try:
            path = await self._systemd.get_unit(name)
        except NoSuchUnit:
            return UNLOADED
        get = self._systemd.get_property
        active = _str(await get(path, UNIT, "ActiveState"), "ActiveState")
        sub = _str(await get(path, UNIT, "SubState"), "SubState")
        result = UNLOADED.result
        if name.endswith(".service"):
            result = _str(await get(path, SERVICE, "Result"), "Result")
        return UnitState(active, sub, result)

    @contextlib.asynccontextmanager
    async def watch(self, names: Iterable[str]) -> AsyncIterator[AsyncIterator[UnitChanged]]:
        changes = _Changes(ChangeFilter(names), self._clock)
        bus = self._systemd.bus
        rules = [_properties_changed_rule(unit_path(n)) for n in changes.names]
        bus.add_message_handler(changes.on_message)
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(changes.close_when(self._connection_lost()))
                try:
                    await self._listen(rules)
                    for name in changes.names:
                        changes.seed(name, await self._state(name))
                    yield changes
                finally:
                    watcher.cancel()
                    await self._unlisten(rules)
        except BaseExceptionGroup as group:
            # The watcher never fails: the one error is the body's (the caller's, or a
            # refused subscription), and callers catch it by its own type.
            if len(group.exceptions) != 1:
                raise
            error = group.exceptions[0]
            raise error from error.__cause__
        finally:
            bus.remove_message_handler(changes.on_message)

    def _connection_lost(self) -> Awaitable[None]:
        """Done once the connection is gone. One waiter per connection, outside any watch's
        group, shared through a shield: a watch that closes cancels only its own wait. (A
        task waiting on dbus-fast's disconnect future cancels that very future when it is
        cancelled, and every later watch would then miss the loss.)"""
        if self._lost is None:
            waiter = _until_disconnected(self._systemd.bus)
            self._lost = asyncio.get_running_loop().create_task(waiter)
        return asyncio.shield(self._lost)

    async def _listen(self, rules: list[str]) -> None:
        await self._subscribe()
        for rule in rules:
            await self._systemd.add_match(rule)

    async def _subscribe(self) -> None:
        """Subscribe the connection once; concurrent watches wait for that one call."""
        async with self._subscribing:
            if not self._subscribed:
                # Without a subscriber systemd sends no unit signals at all.
                await self._systemd.subscribe()
                self._subscribed = True

    async def _unlisten(self, rules: list[str]) -> None:
        if not self._systemd.bus.connected:
            return
        for rule in rules:
            with contextlib.suppress(UnavailableError, UnitError):
                await self._systemd.remove_match(rule)


class _Changes:
    """The iterator a watch yields: PropertiesChanged signals in, UnitChanged events out."""

    def __init__(self, changes: ChangeFilter, clock: Callable[[], float]) -> None:
        self._filter = changes
        self._clock = clock
        self._by_path = {unit_path(n): n for n in changes.names}
        self._result: dict[str, str] = {}
        self._state: dict[str, tuple[str, str]] = {}
        self._queue: asyncio.Queue[UnitChanged | None] = asyncio.Queue()

    @property
    def names(self) -> frozenset[str]:
        return self._filter.names

    def seed(self, name: str, state: UnitState) -> None:
        self._filter.seed(name, state)
        self._result.setdefault(name, state.result)
        self._state.setdefault(name, (state.active_state, state.sub_state))

    def on_message(self, msg: Message) -> None:
        """Bus handler (runs for every incoming message; returns None so others see it)."""
        if (
            msg.message_type is not MessageType.SIGNAL
            or msg.member != "PropertiesChanged"
            or msg.interface != PROPERTIES
        ):
            return
        name = self._by_path.get(msg.path or "")
        if name is None or len(msg.body) < 2 or not isinstance(msg.body[1], dict):
            return
        at = self._clock()
        interface, changed = msg.body[0], msg.body[1]
        values = {k: v.value for k, v in changed.items() if isinstance(v, Variant)}
        if interface == SERVICE and isinstance(values.get("Result"), str):
            self._result[name] = values["Result"]
        elif interface == UNIT:
            active, sub = self._state.get(name, (UNLOADED.active_state, UNLOADED.sub_state))
            active = values.get("ActiveState", active)
            sub = values.get("SubState", sub)
            if not (isinstance(active, str) and isinstance(sub, str)):
                return
            self._state[name] = (active, sub)
            state = UnitState(active, sub, self._result.get(name, UNLOADED.result))
            event = self._filter.report(name, state, at)
            if event is not None:
                self._queue.put_nowait(event)

    async def close_when(self, lost: Awaitable[None]) -> None:
        """Wake the reader with an error once ``lost`` (the connection is gone)."""
        await lost
        self._queue.put_nowait(None)

    def __aiter__(self) -> _Changes:
        return self

    async def __anext__(self) -> UnitChanged:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)
            raise UnavailableError("D-Bus connection to systemd lost")
        return event
