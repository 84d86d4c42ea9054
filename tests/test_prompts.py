"""Label text to prompts: the label forms users write, templates as data, and pooling weights."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot.errors import InputError
from fewshot.prompts import label_prompts, parse_labels, resolve_templates, template_sets


def test_label_forms_parse_to_one_shape():
    assert parse_labels(["sport", "politics"]) == {"sport": [], "politics": []}
    assert parse_labels(["bird: has feathers, lays eggs"]) == {"bird": ["has feathers", "lays eggs"]}
    # a colon not followed by a space is part of the name
    assert parse_labels(["12:30", "http://sport.example", "ratio 3:1 offers"]) == {
        "12:30": [],
        "http://sport.example": [],
        "ratio 3:1 offers": [],
    }
    assert parse_labels({"fish": "swims"}) == {"fish": ["swims"]}
    assert parse_labels(np.array([3, 7])) == {3: [], 7: []}  # numpy scalars become plain labels
    assert parse_labels({"cat": {"description": "a pet", "attributes": ["purrs"]}}) == {"cat": ["a pet", "purrs"]}
    for bad, message in [
        ("sport", "list of names"),
        ([], "empty"),
        (["a", "a"], "given twice"),
        ({"sport", "politics"}, "a set, which has no order"),  # the classes' order is every score's columns
        ([" "], "label 1 of 1 has an empty name"),
        (["sport", None], "label 2 of 2 is None"),
        ({"x": {"colour": "red"}}, "unknown keys"),
        ({"x": ["", "ok"]}, "empty or non-text"),
        ({"sport": 1, "politics": 2}, "its description is a int"),
        ([["sport"], "politics"], "is a list; a label is a string or a number"),
        ({"x": {"attributes": "red"}}, "attributes must be a list"),
        ([1, "1", "two"], "mix types"),
        ({0.5: "mildly positive", 1.5: "very positive"}, "not a whole number"),  # named as labels, not as y
    ]:
        with pytest.raises(InputError, match=message):
            parse_labels(bad)


def test_templates_are_data_and_resolve_by_name_list_or_default():
    sets = template_sets("text")
    assert "plain" in sets and "ensemble" in sets and all("{}" in t for t in sets["ensemble"])
    assert resolve_templates(None) == sets["ensemble"]
    assert resolve_templates(None, "image") == template_sets("image")["plain"]
    assert resolve_templates("It is about {}.") == ["It is about {}."]
    with pytest.raises(InputError, match="neither a template set .plain, ensemble. nor a template: a template holds"):
        resolve_templates("no-such-set")
    with pytest.raises(InputError, match="placeholder"):
        resolve_templates(["no placeholder"])


def test_each_phrasing_of_a_label_weighs_the_same_however_many_templates_fill_it():
    texts, owners, weights = label_prompts({"bird": ["has feathers"], "fish": []}, ["a {}.", "the {}.", "{}"])
    assert texts == ["a bird.", "the bird.", "bird", "has feathers", "a fish.", "the fish.", "fish"]
    assert owners == ["bird"] * 4 + ["fish"] * 3
    assert weights[:3] == pytest.approx([1 / 3] * 3) and weights[3] == 1.0  # name and description: 1 each
    assert sum(w for w, o in zip(weights, owners) if o == "bird") == pytest.approx(2.0)
