"""The availability model: FIG 5 transitions, component names, containment tree, classes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haos.errors import IllegalTransition, ModelError
from haos.model.classes import BUILTIN_CLASSES, ClassRegistry, ComponentClass, Method
from haos.model.names import ancestors_of, check_name, is_within, parent_of
from haos.model.states import TRANSITIONS, AvailabilityState, check_transition, is_legal
from haos.model.tree import Component, ContainmentTree

OFF = AvailabilityState.OFFLINE
SPARE = AvailabilityState.SPARE
SEC = AvailabilityState.SECONDARY
PRI = AvailabilityState.PRIMARY

# --- FIG 5: availability state transitions -----------------------------------------------------

# Written out independently of haos.model.states.TRANSITIONS, so the table checks the code.
FIG5_ALLOWED: frozenset[tuple[AvailabilityState, AvailabilityState]] = frozenset(
    {
        (OFF, SPARE),
        (OFF, SEC),
        (OFF, PRI),
        (SPARE, OFF),
        (SPARE, SEC),
        (SPARE, PRI),
        (SEC, PRI),
        (SEC, SPARE),
        (SEC, OFF),
        (PRI, SPARE),
        (PRI, OFF),
    }
)
ALL_PAIRS = list(itertools.product(AvailabilityState, repeat=2))


def test_fig5_table_covers_all_sixteen_pairs() -> None:
    assert len(AvailabilityState) == 4
    assert len(ALL_PAIRS) == 16
    assert len(FIG5_ALLOWED) == 11
    assert set(TRANSITIONS) == set(AvailabilityState)


@pytest.mark.parametrize(
    ("old", "new"),
    [p for p in ALL_PAIRS if p in FIG5_ALLOWED],
    ids=lambda s: str(s),
)
def test_fig5_transition_is_allowed(old: AvailabilityState, new: AvailabilityState) -> None:
    assert is_legal(old, new)
    check_transition("shelf1/slot1/node/app", old, new)  # must not raise


@pytest.mark.parametrize(
    ("old", "new"),
    [p for p in ALL_PAIRS if p not in FIG5_ALLOWED],
    ids=lambda s: str(s),
)
def test_fig5_transition_is_refused_naming_component_and_states(
    old: AvailabilityState, new: AvailabilityState
) -> None:
    assert not is_legal(old, new)
    with pytest.raises(IllegalTransition) as caught:
        check_transition("shelf1/slot1/node/app", old, new)
    message = str(caught.value)
    assert "shelf1/slot1/node/app" in message
    assert f"{old} -> {new}" in message
    assert caught.value.code == "illegal-transition"
    assert isinstance(caught.value, ModelError)


def test_primary_never_becomes_secondary_directly_but_can_via_spare() -> None:
    with pytest.raises(IllegalTransition):
        check_transition("app", PRI, SEC)
    check_transition("app", PRI, SPARE)
    check_transition("app", SPARE, SEC)


# --- names -------------------------------------------------------------------------------------

SEG63 = "a" * 63
SEG64 = "a" * 64


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a", id="one-letter"),
        pytest.param("0", id="one-digit"),
        pytest.param("shelf1/slot3/node/app", id="four-levels"),
        pytest.param("a.b_c-d", id="dot-underscore-dash-inside"),
        pytest.param("node-", id="trailing-dash"),
        pytest.param(SEG63, id="63-char-segment"),
        pytest.param(f"{SEG63}/{SEG63}", id="two-63-char-segments"),
    ],
)
def test_valid_name_is_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("Shelf1", id="uppercase"),
        pytest.param("shelf1/", id="trailing-slash"),
        pytest.param("/shelf1", id="leading-slash"),
        pytest.param("shelf1//slot1", id="double-slash"),
        pytest.param(SEG64, id="64-char-segment"),
        pytest.param(f"shelf1/{SEG64}", id="64-char-second-segment"),
        pytest.param("-shelf", id="leading-dash"),
        pytest.param("_shelf", id="leading-underscore"),
        pytest.param(".shelf", id="leading-dot"),
        pytest.param("shelf 1", id="space"),
        pytest.param(" shelf1", id="leading-space"),
        pytest.param("shelf1\n", id="trailing-newline"),
        pytest.param("shelf1/slot1\n", id="trailing-newline-in-last-segment"),
        pytest.param("shelf1\\slot1", id="backslash"),
        pytest.param("shélf", id="non-ascii"),
        pytest.param("/", id="only-slash"),
    ],
)
def test_invalid_name_is_refused(name: str) -> None:
    with pytest.raises(ModelError):
        check_name(name)


@pytest.mark.parametrize(
    ("name", "parent", "ancestors"),
    [
        pytest.param("shelf1", None, [], id="top-level"),
        pytest.param("shelf1/slot1", "shelf1", ["shelf1"], id="second-level"),
        pytest.param(
            "shelf1/slot1/node/app",
            "shelf1/slot1/node",
            ["shelf1/slot1/node", "shelf1/slot1", "shelf1"],
            id="fourth-level-nearest-first",
        ),
    ],
)
def test_parent_and_ancestors(name: str, parent: str | None, ancestors: list[str]) -> None:
    assert parent_of(name) == parent
    assert ancestors_of(name) == ancestors


@pytest.mark.parametrize(
    ("name", "container", "within"),
    [
        pytest.param("a/b", "a/b", True, id="itself"),
        pytest.param("a/b/c", "a/b", True, id="child"),
        pytest.param("a/b/c/d", "a", True, id="deep-descendant"),
        pytest.param("a/bc", "a/b", False, id="sibling-sharing-prefix"),
        pytest.param("ab", "a", False, id="top-level-sharing-prefix"),
        pytest.param("a", "a/b", False, id="container-is-not-within-child"),
        pytest.param("b/a", "a", False, id="same-leaf-elsewhere"),
    ],
)
def test_is_within(name: str, container: str, within: bool) -> None:
    assert is_within(name, container) is within


# --- containment tree --------------------------------------------------------------------------


def tree_of(*names: str) -> ContainmentTree:
    tree = ContainmentTree()
    for name in names:
        tree.add(Component(name, "component"))
    return tree


SHELVES = (
    "shelf1",
    "shelf1/slot1",
    "shelf1/slot1/node",
    "shelf1/slot1/node/app",
    "shelf1/slot1/node/db",
    "shelf1/slot2",
    "shelf2",
)


def test_add_without_parent_is_refused_and_changes_nothing() -> None:
    tree = tree_of("shelf1")
    with pytest.raises(ModelError, match=r"parent 'shelf1/slot1' does not exist"):
        tree.add(Component("shelf1/slot1/node", "node"))
    assert len(tree) == 1
    assert "shelf1/slot1/node" not in tree
    assert tree.children("shelf1") == []


def test_add_with_bad_name_is_refused() -> None:
    tree = tree_of("shelf1")
    with pytest.raises(ModelError, match="bad component name"):
        tree.add(Component("shelf1/Slot1", "slot"))
    assert len(tree) == 1


def test_duplicate_is_refused_and_first_is_kept() -> None:
    tree = ContainmentTree()
    tree.add(Component("shelf1", "chassis"))
    with pytest.raises(ModelError, match="already exists"):
        tree.add(Component("shelf1", "slot"))
    assert len(tree) == 1
    assert tree.get("shelf1").cls == "chassis"
    assert tree.roots() == ["shelf1"]


def test_remove_takes_the_whole_subtree_children_before_parents() -> None:
    tree = tree_of(*SHELVES)
    removed = tree.remove("shelf1/slot1")
    assert sorted(removed) == [
        "shelf1/slot1",
        "shelf1/slot1/node",
        "shelf1/slot1/node/app",
        "shelf1/slot1/node/db",
    ]
    assert removed[-1] == "shelf1/slot1"
    assert removed.index("shelf1/slot1/node/app") < removed.index("shelf1/slot1/node")
    assert removed.index("shelf1/slot1/node/db") < removed.index("shelf1/slot1/node")
    assert sorted(c.name for c in tree) == ["shelf1", "shelf1/slot2", "shelf2"]
    assert tree.children("shelf1") == ["shelf1/slot2"]


def test_remove_of_a_leaf_returns_only_it() -> None:
    tree = tree_of(*SHELVES)
    assert tree.remove("shelf1/slot1/node/db") == ["shelf1/slot1/node/db"]
    assert tree.children("shelf1/slot1/node") == ["shelf1/slot1/node/app"]


def test_remove_of_a_root_leaves_the_other_roots() -> None:
    tree = tree_of(*SHELVES)
    removed = tree.remove("shelf1")
    assert set(removed) == set(SHELVES) - {"shelf2"}
    assert_children_before_parents(removed)
    assert tree.roots() == ["shelf2"]
    assert len(tree) == 1


def test_remove_of_unknown_component_is_refused() -> None:
    tree = tree_of(*SHELVES)
    with pytest.raises(ModelError, match="no component 'shelf3'"):
        tree.remove("shelf3")
    assert len(tree) == len(SHELVES)


def test_removed_component_can_be_added_again() -> None:
    tree = tree_of(*SHELVES)
    tree.remove("shelf1/slot1")
    tree.add(Component("shelf1/slot1", "slot"))
    assert tree.children("shelf1/slot1") == []
    assert tree.get("shelf1/slot1").cls == "slot"


def test_unknown_component_lookups_raise_model_error() -> None:
    tree = tree_of("shelf1")
    with pytest.raises(ModelError):
        tree.get("shelf2")
    with pytest.raises(ModelError):
        tree.children("shelf2")


def test_subtree_lists_parents_before_children_and_contains_follows_names() -> None:
    tree = tree_of(*SHELVES)
    order = list(tree.subtree("shelf1"))
    assert set(order) == set(SHELVES) - {"shelf2"}
    assert_children_before_parents(list(reversed(order)))
    assert tree.contains("shelf1/slot1", "shelf1/slot1/node/app")
    assert not tree.contains("shelf1/slot1", "shelf1/slot2")


def test_copy_is_independent_both_ways() -> None:
    original = tree_of(*SHELVES)
    snapshot = original.copy()
    original.remove("shelf1/slot1")
    original.add(Component("shelf3", "chassis"))
    assert sorted(c.name for c in snapshot) == sorted(SHELVES)
    assert snapshot.children("shelf1") == ["shelf1/slot1", "shelf1/slot2"]
    assert "shelf3" not in snapshot

    snapshot.add(Component("shelf1/slot1/node/web", "application"))
    snapshot.remove("shelf2")
    assert "shelf1/slot1/node/web" not in original
    assert "shelf2" in original
    assert original.roots() == ["shelf1", "shelf2", "shelf3"]


def assert_children_before_parents(removed: list[str]) -> None:
    for i, name in enumerate(removed):
        for container in ancestors_of(name):
            if container in removed:
                assert removed.index(container) > i, (name, container, removed)


def assert_tree_invariants(tree: ContainmentTree, expected: set[str]) -> None:
    names = [c.name for c in tree]
    assert len(names) == len(set(names)) == len(tree)
    assert set(names) == expected
    # Every component has its parent present, and appears exactly once in exactly one
    # children list: that of the parent its name says.
    listed: list[str] = list(tree.roots())
    for name in names:
        parent = parent_of(name)
        assert parent is None or parent in tree
        kids = tree.children(name)
        assert len(kids) == len(set(kids))
        assert set(kids) == {n for n in expected if parent_of(n) == name}
        listed += kids
    assert sorted(listed) == sorted(names)
    assert set(tree.roots()) == {n for n in expected if parent_of(n) is None}
    walked = [n for root in tree.roots() for n in tree.subtree(root)]
    assert sorted(walked) == sorted(names)


PATHS = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map("/".join)
OPS = st.lists(st.tuples(st.sampled_from(["add", "remove", "copy"]), PATHS), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_random_adds_and_removes_keep_the_tree_consistent(ops: list[tuple[str, str]]) -> None:
    tree = ContainmentTree()
    model: set[str] = set()
    snapshots: list[tuple[ContainmentTree, set[str]]] = []
    for op, path in ops:
        parent = parent_of(path)
        if op == "add":
            if path in model or (parent is not None and parent not in model):
                with pytest.raises(ModelError):
                    tree.add(Component(path, "component"))
            else:
                tree.add(Component(path, "component"))
                model.add(path)
        elif op == "remove":
            if path not in model:
                with pytest.raises(ModelError):
                    tree.remove(path)
            else:
                removed = tree.remove(path)
                gone = {n for n in model if is_within(n, path)}
                assert len(removed) == len(gone)
                assert set(removed) == gone
                assert_children_before_parents(removed)
                model -= gone
        else:
            snapshots.append((tree.copy(), set(model)))
        assert_tree_invariants(tree, model)
    for snapshot, expected in snapshots:
        assert_tree_invariants(snapshot, expected)


# --- component classes -------------------------------------------------------------------------

M = Method
COMPONENT_METHODS = {M.LOCK, M.UNLOCK, M.SELF_TEST}
HARDWARE_METHODS = COMPONENT_METHODS | {M.RESET, M.POWER_OFF, M.POWER_ON}
SOFTWARE_METHODS = COMPONENT_METHODS | {M.SOFT_RESET, M.RESTART, M.KILL, M.SHUTDOWN, M.QUIESCE}
HSP_NODE = ComponentClass("hsp-node", "node", frozenset({M.SOFT_RESET}))


def registry() -> ClassRegistry:
    reg = ClassRegistry()
    reg.add(HSP_NODE)
    return reg


@pytest.mark.parametrize(
    ("cls", "lineage"),
    [
        pytest.param("component", ["component"], id="root-class"),
        pytest.param("chassis", ["chassis", "hardware", "component"], id="chassis"),
        pytest.param("node", ["node", "board", "hardware", "component"], id="node"),
        pytest.param("application", ["application", "software", "component"], id="application"),
        pytest.param(
            "hsp-node", ["hsp-node", "node", "board", "hardware", "component"], id="added-subclass"
        ),
    ],
)
def test_lineage_most_specific_first(cls: str, lineage: list[str]) -> None:
    reg = registry()
    assert reg.lineage(cls) == lineage
    assert all(reg.is_a(cls, base) for base in lineage)


@pytest.mark.parametrize(
    ("cls", "methods"),
    [
        pytest.param("component", COMPONENT_METHODS, id="component"),
        pytest.param("slot", HARDWARE_METHODS, id="slot-inherits-hardware"),
        pytest.param(
            "node", HARDWARE_METHODS | {M.REBOOT, M.SHUTDOWN}, id="node-reboot-reset-lock"
        ),
        pytest.param("application", SOFTWARE_METHODS, id="application-inherits-software"),
        pytest.param(
            "hsp-node",
            HARDWARE_METHODS | {M.REBOOT, M.SHUTDOWN, M.SOFT_RESET},
            id="added-subclass-own-plus-inherited",
        ),
    ],
)
def test_methods_are_own_plus_inherited(cls: str, methods: set[Method]) -> None:
    assert registry().methods(cls) == frozenset(methods)


def test_node_supports_reboot_reset_and_lock_but_not_restart() -> None:
    methods = ClassRegistry().methods("node")
    assert {M.REBOOT, M.RESET, M.LOCK} <= methods
    assert M.RESTART not in methods  # a software method; node is hardware
    assert not ClassRegistry().is_a("node", "software")


@pytest.mark.parametrize(
    ("cls", "hosts"),
    [
        pytest.param("node", True, id="node"),
        pytest.param("hsp-node", True, id="node-subclass-inherits"),
        pytest.param("board", False, id="board-base-of-node"),
        pytest.param("chassis", False, id="chassis"),
        pytest.param("application", False, id="application"),
        pytest.param("component", False, id="root-class"),
    ],
)
def test_hosts_components(cls: str, hosts: bool) -> None:
    assert registry().hosts_components(cls) is hosts


def test_unknown_base_is_refused_and_not_added() -> None:
    reg = ClassRegistry()
    with pytest.raises(ModelError, match=r"unknown base class 'blade'"):
        reg.add(ComponentClass("hsp-node", "blade", frozenset()))
    assert "hsp-node" not in reg


def test_subclass_before_its_base_is_refused() -> None:
    with pytest.raises(ModelError, match="unknown base class 'hsp-node'"):
        ClassRegistry([*BUILTIN_CLASSES, ComponentClass("x", "hsp-node", frozenset()), HSP_NODE])


def test_duplicate_class_is_refused_and_first_is_kept() -> None:
    reg = ClassRegistry()
    with pytest.raises(ModelError, match="defined twice"):
        reg.add(ComponentClass("node", "software", frozenset()))
    assert reg.get("node").base == "board"
    assert reg.hosts_components("node")


def test_unknown_class_lookups_raise_model_error() -> None:
    reg = ClassRegistry()
    for lookup in (reg.get, reg.lineage, reg.methods, reg.hosts_components):
        with pytest.raises(ModelError, match="unknown component class 'blade'"):
            lookup("blade")


def test_as_mapping_is_a_copy_that_cannot_change_the_registry() -> None:
    reg = ClassRegistry()
    mapping = reg.as_mapping()
    assert set(mapping) == {c.name for c in BUILTIN_CLASSES}
    assert isinstance(mapping, dict)
    mapping.clear()
    assert "node" in reg
