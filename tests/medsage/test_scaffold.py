"""The LVKC scaffold: strict reports, lenient recovery (every oddity of the paper's Figure 12), regions."""

from __future__ import annotations

import pytest

from medsage.scaffold import (
    GRID,
    Region,
    ScaffoldError,
    Trajectory,
    check_strict,
    parse_lenient,
    parse_regions,
    parse_strict,
    render,
    render_check,
    split_retry,
)

GOOD = render(
    loc='Left upper quadrant near the spleen {"box_2d": [315, 742, 785, 968], "label": "fluid"}',
    vis="Hyperdense free fluid adjacent to the spleen.",
    know="Acute blood is hyperdense on non-contrast CT.",
    con="Hyperdense free fluid supports hemoperitoneum.",
    answer="Yes",
)


def codes(text: str, **kw) -> list[tuple[str, str | None]]:
    return [(i.code, i.tag) for i in check_strict(text, **kw)[1]]


# ----------------------------------------------------------------------------------------- strict


def test_render_then_strict_parse_round_trips():
    traj = parse_strict(GOOD, require_region=True)
    assert traj.answer == "Yes"
    assert traj.vis == "Hyperdense free fluid adjacent to the spleen."
    assert parse_strict(traj.render()) == traj


def test_render_refuses_empty_stage():
    with pytest.raises(ValueError, match="know"):
        Trajectory(loc="l", vis="v", know="  ", con="c", answer="a").render()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<LOC>l</LOC><VISUAL>v</VISUAL><CON>c</CON><ANSWER>a</ANSWER>", [("missing_stage", "KNOWLEDGE")]),
        ("<VISUAL>v</VISUAL><LOC>l</LOC><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>",
         [("wrong_order", "LOC")]),
        ("<LOC>l</LOC><LOC>m</LOC><VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>",
         [("duplicate", "LOC")]),
        ("<LOC>l</LOC><VISUAL>v<KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>", [("unclosed", "VISUAL")]),
        ("<LOC>l</LOC><VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a", [("unclosed", "ANSWER")]),
        ("<LOC>l</LOC></VISUAL><VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>",
         [("stray_close", "VISUAL")]),
        ("<LOC>l</LOC><VISUAL> </VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>",
         [("empty_stage", "VISUAL")]),
        ("<LOC>l</LOC>so<VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>",
         [("text_outside", None)]),
        ("Intro.<LOC>l</LOC><VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>",
         [("text_outside", None)]),
        ("<LOC>l</LOC><VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER> trailing",
         [("text_outside", None)]),
        ("<LOC>l</LOC><VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>"
         "<CHECK>c</CHECK>", [("stray_close", "CHECK")]),
    ],
    ids=["missing", "order", "duplicate", "unclosed-before-next", "unclosed-at-end", "stray-close", "empty",
         "text-between", "preamble-not-allowed", "trailing-text", "check-outside-retry"],
)
def test_strict_reports_each_defect(text, expected):
    assert codes(text) == expected


def test_strict_reports_every_defect_at_once_and_raises_with_all():
    text = "<VISUAL></VISUAL><LOC>l</LOC><CON>c</CON>"
    found = codes(text)
    assert ("empty_stage", "VISUAL") in found
    assert ("wrong_order", "LOC") in found
    assert ("missing_stage", "KNOWLEDGE") in found and ("missing_stage", "ANSWER") in found
    with pytest.raises(ScaffoldError) as err:
        parse_strict(text)
    assert len(err.value.issues) == len(found)
    assert "missing_stage" in str(err.value)


def test_strict_offsets_point_at_the_problem():
    text = "<LOC>l</LOC><VISUAL>v</VISUAL><KNOWLEDGE></KNOWLEDGE><CON>c</CON><ANSWER>a</ANSWER>"
    (issue,) = check_strict(text)[1]
    assert text[issue.offset - len("<KNOWLEDGE>"):issue.offset] == "<KNOWLEDGE>"


def test_strict_preamble_allowed_when_asked():
    text = "This is an axial CT. " + GOOD
    traj, issues = check_strict(text, allow_preamble=True)
    assert issues == []
    assert traj.preamble == "This is an axial CT."


def test_strict_region_is_required_when_asked_and_bad_json_is_reported():
    no_region = GOOD.replace(' {"box_2d": [315, 742, 785, 968], "label": "fluid"}', "")
    assert codes(no_region) == []
    assert codes(no_region, require_region=True) == [("missing_region", "LOC")]
    bad = GOOD.replace('"label": "fluid"}', '"label": fluid}')
    assert codes(bad) == [("invalid_region", "LOC")]
    # A bad region is never silently treated as "no region".
    assert codes(bad, require_region=True) == [("invalid_region", "LOC")]


def test_strict_lowercase_or_spaced_tags_are_not_tags():
    text = GOOD.replace("<LOC>", "< LOC >")
    assert ("missing_stage", "LOC") in codes(text)


def test_retry_split_and_strict_check():
    first = GOOD.replace("<ANSWER>Yes</ANSWER>", "<ANSWER>No</ANSWER>")
    text = first + render_check("Visual grounding: the fluid was missed.") + GOOD
    t1, check, t2 = split_retry(text)
    assert (t1, t2) == (first, GOOD)
    assert check == "Visual grounding: the fluid was missed."
    traj, issues = check_strict(text, allow_check=True)
    assert issues == [] and traj.answer == "Yes"
    broken = first + "<CHECK> </CHECK>" + GOOD.replace("<CON>", "")
    found = [(i.code, i.tag) for i in check_strict(broken, allow_check=True)[1]]
    assert ("empty_stage", "CHECK") in found
    assert ("missing_stage", "CON") in found and ("stray_close", "CON") in found
    assert split_retry(GOOD) is None


# ---------------------------------------------------------------------------------------- lenient
# Verbatim shapes of the paper's Figure 12 outputs (parts 1-3).

FIG12_CT = (
    "This is a non-contrast axial CT image of the upper abdomen. <LOC>The region of interest is the left "
    'upper quadrant {"box_2d": [315, 742, 785, 968], "label": "perisplenic hyperdense fluid"}. No fluid in the '
    'right upper quadrant {"point": [420, 215], "label": "right upper quadrant"}.</LOC><VISUAL>Hyperdense free '
    "fluid.</VISUAL><KNOWLEDGE>- Acute hemorrhage is hyperdense.</KNOWLEDGE><CON>Supports hemoperitoneum."
    "</CON><ANSWER>Findings are consistent with acute intraperitoneal hemorrhage (hemoperitoneum).</ANSWER>"
)
FIG12_OCT = (
    "This is a high-resolution OCT scan of the macular region.\n\n \n<LOC>The central macula "
    '{"point": [235, 608], "label": "focal RPE elevation"}.</LOC>\n\n<VISUAL>A localized dome-shaped elevation.'
    "\n\n</VISUAL><KNOWLEDGE>PED: separation of RPE.</KNOWLEDGE><CON> The focal PED confirms detachment. </CON>\n\n"
    "<ANSWER>Findings are most consistent with choroidal neovascularization (CNV).</ANSWER>"
)
FIG12_US = (
    "This is a grayscale (B-mode) ultrasound image.<LOC>\n\nThe primary region of interest is a large organ "
    '{"box_2d": [180, 400, 860, 730], "label": "spleen"} beneath the rib cage {"point": [105, 395], '
    '"label": "rib shadowing"}.\n\n</LOC><VISUAL>Uniform echotexture.</VISUAL>\n\n<KNOWLEDGE> - The spleen '
    "is crescent shaped. <KNOWLEDGE><CON> The shape is characteristic of the spleen. </CON><ANSWER>The imaged "
    "structure is the spleen.</ANSWER>"
)
FIG12_XRAY = (
    "This is a posteroanterior (PA) chest X-ray.\n\n<LOC>The bilateral lung fields "
    '{"box_2d": [310, 145, 875, 885], "label": "bilateral lung fields"} and the marker {"point": [115, 85], '
    '"label": "right-side marker"} aids anatomic localization.<LOC>\n\n<VISUAL>The ribs are intact.</VISUAL>'
    "<KNOWLEDGE>\n\n- A PA chest X-ray visualizes the lungs.</KNOWLEDGE><CON>\n\nThe image contains the full "
    "thoracic cavity.\n\n</CON><ANSWER>**This image represents the chest**</ANSWER>"
)


def test_lenient_reads_a_well_formed_figure12_output_with_preamble():
    traj = parse_lenient(FIG12_CT)
    assert traj.complete
    assert traj.preamble.startswith("This is a non-contrast axial CT")
    assert traj.answer == "Findings are consistent with acute intraperitoneal hemorrhage (hemoperitoneum)."
    regions, issues = traj.regions()
    assert issues == []
    assert [r.kind for r in regions] == ["box", "point"]
    assert regions[0].coords == (315, 742, 785, 968) and regions[0].label == "perisplenic hyperdense fluid"


def test_lenient_tags_with_newlines_and_whitespace():
    traj = parse_lenient(FIG12_OCT)
    assert traj.complete
    assert traj.vis == "A localized dome-shaped elevation."
    assert traj.con == "The focal PED confirms detachment."


def test_lenient_knowledge_closed_by_a_second_knowledge_tag():
    traj = parse_lenient(FIG12_US)
    assert traj.know == "- The spleen is crescent shaped."
    assert traj.con == "The shape is characteristic of the spleen."
    assert traj.answer == "The imaged structure is the spleen."
    assert any("closed by a repeated opening tag" in n for n in traj.notes)
    assert len(traj.regions()[0]) == 2


def test_lenient_loc_closed_by_a_second_loc_tag_and_bold_answer():
    traj = parse_lenient(FIG12_XRAY)
    assert traj.loc.endswith("aids anatomic localization.")
    assert traj.vis == "The ribs are intact."
    assert traj.answer == "This image represents the chest"
    assert "removed emphasis around the answer" in traj.notes


def test_strict_rejects_what_lenient_recovers():
    assert ("unclosed", "KNOWLEDGE") in codes(FIG12_US, allow_preamble=True)
    assert ("unclosed", "LOC") in codes(FIG12_XRAY, allow_preamble=True)
    assert codes(FIG12_CT, allow_preamble=True, require_region=True) == []


@pytest.mark.parametrize("tag_form", ["< ANSWER >", "<answer>", "<Answer\n>"])
def test_lenient_tag_case_and_inner_whitespace(tag_form):
    traj = parse_lenient(GOOD.replace("<ANSWER>", tag_form))
    assert traj.answer == "Yes"


def test_lenient_missing_stages_are_none_and_unclosed_answer_reads_to_end():
    traj = parse_lenient("<VISUAL>bright</VISUAL><ANSWER> __No__ ")
    assert (traj.loc, traj.know, traj.con) == (None, None, None)
    assert traj.vis == "bright" and traj.answer == "No"
    assert not traj.complete
    assert parse_lenient("no tags at all").answer is None


def test_lenient_retry_returns_the_revised_trajectory():
    first = GOOD.replace("<ANSWER>Yes</ANSWER>", "<ANSWER>No</ANSWER>")
    traj = parse_lenient(first + render_check("re-check") + GOOD)
    assert traj.answer == "Yes"


# ---------------------------------------------------------------------------------------- regions


def test_region_pixel_round_trip():
    w, h = 640, 480
    region = Region.box_from_pixels((64, 48, 320, 240), w, h, label="lesion")
    assert region.coords == (100, 100, 500, 500)  # [y1, x1, y2, x2] on the 0-1000 grid
    assert region.to_pixels(w, h) == (64.0, 48.0, 320.0, 240.0)
    point = Region.point_from_pixels((320, 120), w, h)
    assert point.coords == (250, 500) and point.to_pixels(w, h) == (320.0, 120.0)
    assert Region.box_from_pixels((-5, -5, 700, 500), w, h).coords == (0, 0, GRID, GRID)  # clipped
    parsed, issues = parse_regions(region.to_json())
    assert issues == [] and parsed == [region]


def test_region_pixel_errors():
    with pytest.raises(ValueError, match="x2 < x1"):
        Region.box_from_pixels((10, 10, 5, 20), 100, 100)
    with pytest.raises(ValueError, match="positive"):
        Region.box_from_pixels((0, 0, 1, 1), 0, 100)


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"box_2d": [1, 2, 3]}', "list of 4 numbers"),
        ('{"box_2d": [500, 10, 100, 20]}', "y2 < y1"),
        ('{"box_2d": [0, 0, 1200, 10]}', "outside the 0-1000 grid"),
        ('{"point": [1, 2], "box_2d": [1, 2, 3, 4]}', "exactly one"),
        ('{"point": ["a", 2]}', "numbers only"),
        ('{"point": [1, 2], "label": 5}', '"label" must be a string'),
        ("{'point': [1, 2]}", "not valid JSON"),
        ('{"point": [1, 2], "label": "x"', "not valid JSON"),
    ],
)
def test_invalid_regions_are_reported_not_swallowed(text, problem):
    regions, issues = parse_regions(f"near the hilum {text} and more")
    assert regions == []
    assert len(issues) == 1 and issues[0].code == "invalid_region"
    assert problem in issues[0].message


def test_valid_regions_survive_a_bad_neighbour():
    regions, issues = parse_regions('{"point": [1, 2]} {bad} {"box_2d": [0, 0, 10, 10], "label": "b"}')
    assert [r.kind for r in regions] == ["point", "box"]
    assert len(issues) == 1
