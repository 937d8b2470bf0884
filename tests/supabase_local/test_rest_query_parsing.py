"""PostgREST's URL grammar, parsed without a server (fast, exhaustive cases)."""

from __future__ import annotations

import pytest

from supabase_local.rest.errors import RestError
from supabase_local.rest.query import (
    Condition,
    Logic,
    OrderTerm,
    SelectItem,
    page_window,
    parse_filters,
    parse_order,
    parse_prefer,
    parse_range_header,
    parse_select,
    split_json_path,
)


def test_filters_are_anded_and_reserved_parameters_skipped():
    logic = parse_filters(
        [("select", "*"), ("a", "eq.1"), ("a", "lt.5"), ("b", "not.is.null"), ("apikey", "k")],
        skip={"apikey"},
    )

    assert logic == Logic(
        "AND",
        (
            Condition("a", "eq", "1"),
            Condition("a", "lt", "5"),
            Condition("b", "is", "null", negated=True),
        ),
    )


def test_in_lists_keep_quoted_commas_and_escapes():
    (condition,) = parse_filters([("a", 'in.(1,"x,y","say \\"hi\\"", sp)')], skip=set()).children

    assert condition == Condition("a", "in", ("1", "x,y", 'say "hi"', " sp"))


def test_logic_trees_nest():
    (tree,) = parse_filters(
        [("or", '(a.eq.1,not.and(b.gt.2,c.like.*x*),d.in.(1,2),e.eq."q,r")')], skip=set()
    ).children

    assert tree == Logic(
        "OR",
        (
            Condition("a", "eq", "1"),
            Logic("AND", (Condition("b", "gt", "2"), Condition("c", "like", "%x%")), negated=True),
            Condition("d", "in", ("1", "2")),
            Condition("e", "eq", "q,r"),
        ),
    )


def test_array_literals_in_logic_trees_are_one_value():
    (tree,) = parse_filters(
        [("or", "(id.in.(1,4),tags.cs.{is:open,priority:high},name.like.*{*,b.eq.2)")],
        skip=set(),
    ).children

    assert tree == Logic(
        "OR",
        (
            Condition("id", "in", ("1", "4")),
            Condition("tags", "cs", "{is:open,priority:high}"),
            Condition("name", "like", "%{%"),  # "{" inside a value opens nothing
            Condition("b", "eq", "2"),
        ),
    )


def test_logic_trees_nested_too_deep_are_pgrst100():
    with pytest.raises(RestError) as raised:
        parse_filters([("or", "(" + "or(" * 40 + "a.eq.1" + ")" * 41)], skip=set())

    assert (raised.value.status, raised.value.code) == (400, "PGRST100")


@pytest.mark.parametrize(
    ("key", "value"),
    [("a", "eq"), ("a", "between.1"), ("a", "is.maybe"), ("a", "in.1,2"), ("or", "a.eq.1"),
     ("or", "(a.eq.1"), ("a", "")],
)  # fmt: skip
def test_bad_filters_are_pgrst100(key, value):
    with pytest.raises(RestError) as raised:
        parse_filters([(key, value)], skip=set())

    assert (raised.value.status, raised.value.code) == (400, "PGRST100")


def test_select_items():
    assert parse_select("id,title:name,*,payload->a->>b") == [
        SelectItem("id"),
        SelectItem("name", "title"),
        SelectItem("*"),
        SelectItem("payload->a->>b"),
    ]
    assert parse_select(None) == [SelectItem("*")]
    with pytest.raises(RestError) as raised:
        parse_select("id::text")
    assert "casts are not supported" in raised.value.details


def test_json_paths_split_into_steps():
    assert split_json_path("payload->a->>0") == ("payload", (("->", "a"), ("->>", "0")))
    assert split_json_path("seq") == ("seq", ())


def test_order_terms():
    assert parse_order("a.desc.nullslast,b,c.nullsfirst") == [
        OrderTerm("a", True, "LAST"),
        OrderTerm("b"),
        OrderTerm("c", False, "FIRST"),
    ]
    with pytest.raises(RestError):
        parse_order("a.sideways")


def test_prefer_header_tokens():
    preferences = parse_prefer(
        ["return=representation, count=planned", "resolution=ignore-duplicates,missing=default"]
    )

    assert preferences.returning == "representation"
    assert preferences.count_mode == "planned"
    assert preferences.resolution == "ignore-duplicates"
    assert preferences.missing_default is True


@pytest.mark.parametrize(
    ("limit", "offset", "header", "window"),
    [
        (None, None, None, (0, None)),
        (10, 5, None, (5, 10)),
        (None, None, (3, 7), (3, 5)),
        (None, None, (3, None), (3, None)),
        (10, 0, (5, 20), (5, 5)),  # intersection of 0-9 and 5-20
        (2, 8, (0, 4), (8, 0)),  # disjoint: an empty page
    ],
)
def test_page_window_intersects_limit_offset_and_range(limit, offset, header, window):
    assert page_window(limit, offset, header) == window


@pytest.mark.parametrize(
    ("header", "parsed"),
    [("0-9", (0, 9)), ("items=5-", (5, None)), ("9-0", None), ("x", None), (None, None)],
)
def test_range_header(header, parsed):
    assert parse_range_header(header) == parsed
