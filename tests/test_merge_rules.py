"""The merge rules of SPEC section 3, on YAML files and as properties (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from framework.modules.nodes import DEFAULT, FORCE, NORMAL, Loc, to_node
from framework.modules.types import anything, attrs_of, int_, list_of, str_
from framework.options import evaluate

# ---- on files ---------------------------------------------------------------------------


def test_lists_concatenate_in_import_order(write):
    write("base.yaml", "environment: {systemPackages: [a1]}\n")
    write("extra.yaml", "imports: [base.yaml]\nenvironment: {systemPackages: [b1, b2]}\n")
    write("other.yaml", "environment: {systemPackages: [c1]}\n")
    top = write(
        "top.yaml",
        "imports: [extra.yaml, other.yaml]\nimage: {name: t}\n"
        "environment: {systemPackages: [d1]}\n",
    )
    assert evaluate(top).config["environment"]["systemPackages"] == ["a1", "b1", "b2", "c1", "d1"]


def test_a_diamond_import_counts_once(write):
    write("common.yaml", "environment: {systemPackages: [common]}\n")
    write("left.yaml", "imports: [common.yaml]\n")
    write("right.yaml", "imports: [common.yaml]\n")
    top = write("top.yaml", "imports: [left.yaml, right.yaml]\nimage: {name: t}\n")
    result = evaluate(top)
    assert result.config["environment"]["systemPackages"] == ["common"]
    assert [p.name for p in result.files] == ["common.yaml", "left.yaml", "right.yaml", "top.yaml"]


def test_imports_are_relative_to_the_importing_file(write):
    write("lib/base.yaml", "imports: [./more/deeper.yaml]\n")
    write("lib/more/deeper.yaml", "image: {tag: deep}\n")
    top = write("top.yaml", "imports: [lib/base.yaml]\nimage: {name: t}\n")
    assert evaluate(top).config["image"]["tag"] == "deep"


def test_mappings_merge_key_by_key(write):
    write("a.yaml", "image: {env: {A: '1'}, labels: {x: 'y'}}\n")
    top = write("top.yaml", "imports: [a.yaml]\nimage: {name: t, env: {B: '2'}}\n")
    config = evaluate(top).config["image"]
    assert config["env"] == {"A": "1", "B": "2"}
    assert config["labels"] == {"x": "y"}


def test_default_yields_and_force_wins(write):
    write("base.yaml", "image: {name: !default base, tag: !force pinned}\n")
    top = write("top.yaml", "imports: [base.yaml]\nimage: {name: mine, tag: other}\n")
    config = evaluate(top).config["image"]
    assert (config["name"], config["tag"]) == ("mine", "pinned")


def test_force_on_a_list_replaces_the_others(write):
    write("base.yaml", "environment: {systemPackages: [aa, bb]}\n")
    top = write(
        "top.yaml", "imports: [base.yaml]\nimage: {name: t}\nenvironment:\n"
        "  systemPackages: !force [cc]\n",
    )
    assert evaluate(top).config["environment"]["systemPackages"] == ["cc"]


def test_a_tag_on_a_mapping_applies_to_every_value_in_it(write):
    write("base.yaml", "image: !default {name: base, tag: v1}\n")
    top = write("top.yaml", "imports: [base.yaml]\nimage: {tag: v2}\n")
    config = evaluate(top).config["image"]
    assert (config["name"], config["tag"]) == ("base", "v2")


def test_equal_values_from_two_files_agree(write):
    write("a.yaml", "image: {name: same}\n")
    top = write("top.yaml", "imports: [a.yaml]\nimage: {name: same}\n")
    assert evaluate(top).config["image"]["name"] == "same"


def test_relative_paths_resolve_against_their_file(write, tmp_path):
    write("sub/mod.yaml", "environment: {etc: {motd: {source: ./motd.txt}}}\n")
    top = write("top.yaml", "imports: [sub/mod.yaml]\nimage: {name: t}\n")
    source = evaluate(top).config["environment"]["etc"]["motd"]["source"]
    assert source == str(tmp_path / "sub" / "motd.txt")


def test_defaults_fill_submodules(write):
    top = write("top.yaml", "image: {name: t}\ns6: {services: {web: {execStart: run}}}\n")
    service = evaluate(top).config["s6"]["services"]["web"]
    assert service["type"] == "long-run"
    assert service["restartOnFailure"] is False


# ---- as laws, on definitions --------------------------------------------------------------

names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
scalars = st.one_of(st.integers(-5, 5), names, st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)
    ),
    max_leaves=8,
)


def defs(*values_with_priority):
    return [
        to_node(v, Loc(f"m{i}.yaml", i + 1, 1), p) for i, (v, p) in enumerate(values_with_priority)
    ]


@given(st.lists(st.lists(st.integers(), max_size=4), min_size=1, max_size=5))
def test_law_lists_concatenate_in_definition_order(lists):
    merged = list_of(int_).merge("x", defs(*[(v, NORMAL) for v in lists]))
    assert merged == [item for part in lists for item in part]


@given(st.lists(st.dictionaries(names, st.lists(names, max_size=3), max_size=4), min_size=1,
                max_size=4))
def test_law_mappings_recurse_key_by_key(mappings):
    merged = attrs_of(list_of(str_)).merge("x", defs(*[(m, NORMAL) for m in mappings]))
    assert set(merged) == {k for m in mappings for k in m}
    for key, value in merged.items():
        assert value == [item for m in mappings if key in m for item in m[key]]


@given(st.lists(st.dictionaries(names, values, max_size=3), min_size=1, max_size=3))
def test_law_merging_is_associative(mappings):
    """Merging (a, b) then c gives what merging a, b, c at once gives, when it succeeds."""
    flat = defs(*[(m, NORMAL) for m in mappings])
    try:
        everything = anything.merge("x", flat)
    except Exception:
        return
    if len(flat) > 1:
        head = anything.merge("x", flat[:-1])
        assert anything.merge("x", [to_node(head, Loc("merged")), flat[-1]]) == everything


@given(
    st.lists(st.tuples(scalars, st.sampled_from([DEFAULT, NORMAL, FORCE])), min_size=1,
             max_size=6)
)
def test_law_the_best_priority_decides_a_scalar(definitions):
    best = min(p for _, p in definitions)
    winners = {v for v, p in definitions if p == best}
    if len({(type(v), v) for v in winners}) > 1:
        return  # a real conflict: covered by the error tests
    merged = anything.merge("x", defs(*definitions))
    assert merged == next(iter(winners))
    # The order of the definitions never matters for a scalar.
    assert anything.merge("x", defs(*reversed(definitions))) == merged


def test_a_submodule_left_at_its_default_gets_its_sub_option_defaults(write):
    top = write("top.yaml", "image: {name: t}\nsystemd: {services: {web: {script: run}}}\n")
    service_config = evaluate(top).config["systemd"]["services"]["web"]["serviceConfig"]
    assert service_config["Type"] == "simple"
    assert service_config["ExecStart"] is None
