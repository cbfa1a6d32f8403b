"""The installed units of systemd components get their shutdown order through runtime
drop-ins, written only when missing or different, and removed from units no longer managed."""

from __future__ import annotations

from pathlib import Path

from haos.services.agent.leave import DROPIN, DROPIN_NAME, order_installed_units


def test_each_unit_gets_the_order_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    assert order_installed_units(["web.service", "db.service"], tmp_path)
    for unit in ("web.service", "db.service"):
        text = (tmp_path / f"{unit}.d" / DROPIN_NAME).read_text()
        assert "Before=haos-agentd.service" in text and "After=haos-clusterd.service" in text
    assert not order_installed_units(["db.service", "web.service"], tmp_path)  # no reload


def test_a_changed_drop_in_is_written_again(tmp_path: Path) -> None:
    order_installed_units(["web.service"], tmp_path)
    path = tmp_path / "web.service.d" / DROPIN_NAME
    path.write_text("[Unit]\n")
    assert order_installed_units(["web.service"], tmp_path)
    assert path.read_text() == DROPIN


def test_a_unit_no_longer_managed_loses_only_the_haos_drop_in(tmp_path: Path) -> None:
    order_installed_units(["web.service", "db.service"], tmp_path)
    own = tmp_path / "db.service.d" / "10-local.conf"
    own.write_text("[Service]\nNice=5\n")
    assert order_installed_units(["web.service"], tmp_path)
    assert not (tmp_path / "db.service.d" / DROPIN_NAME).exists()
    assert own.read_text() == "[Service]\nNice=5\n"  # the operator's own drop-in stays
    assert not order_installed_units(["web.service"], tmp_path)


def test_no_systemd_components_write_nothing(tmp_path: Path) -> None:
    assert not order_installed_units([], tmp_path)
    assert list(tmp_path.iterdir()) == []
