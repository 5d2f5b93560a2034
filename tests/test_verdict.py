"""A verdict shows all the evidence in the order an analyst reads it, and nothing that decided nothing in front:
:func:`attribution.evidence.evidence` orders a ``predict --json`` row, the app's Markdown only formats it."""
import pytest

from attribution.caveats import caveat
from attribution.constants import REAL, UNCERTAIN, UNKNOWN
from attribution.evidence import evidence
from attribution.heads.decision import (REASON_DISPUTED, REASON_EXACT, REASON_KNOWN, REASON_MATCH, REASON_REAL,
                                        REASON_UNCERTAIN, REASON_UNKNOWN)
from attribution_app import render
from conftest import EXACT, predict_row as row
from test_caveats import METRICS

def plain(markdown: str) -> str:
    """Markdown without its escapes (what the page reads)."""
    return markdown.replace("\\", "")


def verdict_markdown(r: dict, names: dict) -> str:
    return plain(render.verdict_markdown(r, names))


def details_markdown(r: dict, names: dict) -> str:
    return plain(render.details_markdown(r, names))


def nearest_markdown(ev, pictures: int) -> str:
    return plain(render.nearest_markdown(ev, pictures))


MATCH = {"class": "mine", "score": 3.2, "threshold": 1.1, "false_match_rate_at_score": 0.004,
         "real_false_match_rate_at_score": 0.0004}


def test_a_real_verdict_shows_no_unknown_score():
    text = verdict_markdown(row(REAL, REASON_REAL, synthetic_score=0.03), {})
    assert text.startswith("## Real (not generated)") and "no synthetic traces found" in text
    assert "Synthetic score 0.030, below the real threshold" in text
    assert "Unknown score" not in text and "0.791" not in text  # it decided nothing
    details = details_markdown(row(REAL, REASON_REAL, synthetic_score=0.03), {})
    assert "| unknown score | 0.791 (threshold 0.719); it did not decide this verdict |" in details


def test_the_unknown_score_is_shown_where_it_decided():
    text = verdict_markdown(row(UNKNOWN, REASON_UNKNOWN, synthetic_score=0.97), {})
    assert "## Unknown generator" in text and "Unknown score 0.791 (threshold 0.719): above it" in text
    assert "Synthetic score 0.970, at or above the synthetic threshold" in text


def test_a_known_generator_gives_its_probability_and_the_synthetic_score():
    text = verdict_markdown(row("dalle3", REASON_KNOWN, synthetic_score=0.97), {})
    assert "## Made by dalle3" in text and "Probability 63.7% among the 3 known sources" in text
    assert "Unknown score" not in text


def test_a_class_match_is_said_in_words():
    names = {"mine": "My Gen"}
    ev = evidence(row("mine", REASON_MATCH, class_match=MATCH, synthetic_score=0.3), names)
    assert ev.title == "Made by mine (My Gen)"
    match = [line.text for line in ev.lead if line.kind == "match"]
    assert match == ["Matches the generator you enrolled as mine (My Gen): black-box verification score 3.200, "
                     "threshold 1.100; false-match rate at this score 0.4%, on real photos alone 1 in 2,500."]
    assert not any("Synthetic score" in line.text for line in ev.lead)  # the match decided, not the score
    assert "known generator dalle3" in evidence(row("dalle3", REASON_MATCH, class_match={**MATCH, "class": "dalle3"})
                                                ).lead[0].text


def test_a_disagreement_shows_both_sides():
    text = verdict_markdown(row(UNCERTAIN, REASON_DISPUTED, class_match=MATCH, synthetic_score=0.02,
                                disagreement={"evidence": ["class_match", "synthetic_score"],
                                              "detail": "mine matches, while the synthetic score 0.020 is below "
                                                        "the real threshold"}), {"mine": "mine"})
    assert "Synthetic score 0.020" in text and "Matches the generator you enrolled as mine" in text
    assert "**The evidence disagrees: mine matches" in text


def test_an_exact_duplicate_is_shown_as_the_duplicate_first():
    r = row("dalle3", REASON_EXACT, duplicate_of=EXACT, synthetic_score=0.03)
    ev = evidence(r)
    assert ev.title == "Known image: dalle3"
    assert ev.lead[0].kind == "duplicate" and "in the head's training set as dalle3: 2023-10-04_0.jpeg" in \
        ev.lead[0].text
    assert [n.id for n in ev.nearest] == ["glid3_xl/a/7.png#2"]  # not itself at distance 0.00
    assert ev.nearest[0].caption() == "glid3_xl: 7.png, tile 2 (distance 1.25)"
    text = verdict_markdown(r, {})
    assert "Probability" not in text and "Synthetic score" not in text and "Unknown score" not in text
    details = details_markdown(r, {})  # the pixels' own answer is still there, said to have decided nothing
    assert "synthetic score | 0.030, below the real threshold" in details and "did not decide" in details


def test_a_near_duplicate_is_shown_and_decides_nothing():
    near = {**EXACT, "match": "near", "distance": 8}
    ev = evidence(row("dalle3", REASON_KNOWN, duplicate_of=near, synthetic_score=0.97))
    assert ev.title == "Made by dalle3"
    line = next(line.text for line in ev.lead if line.kind == "near_duplicate")
    assert "8 of 256 bits" in line and "It decides nothing" in line
    assert len(ev.nearest) == 2  # a near copy's entry is a neighbour like any other


@pytest.mark.parametrize("label, reason", [(REAL, REASON_REAL), ("dalle3", REASON_KNOWN), (UNKNOWN, REASON_UNKNOWN),
                                           (UNCERTAIN, REASON_UNCERTAIN), ("dalle3", REASON_EXACT)])
def test_the_measured_caveat_appears_for_each_kind_of_answer(label, reason):
    measured = caveat(label, reason, METRICS)
    r = row(label, reason, caveat=measured, **({"duplicate_of": EXACT} if reason == REASON_EXACT else {}))
    text = verdict_markdown(r, {})
    assert f"*Measured caveat:* {measured['text']}" in text
    lead = [line.kind for line in evidence(r).lead]
    assert lead.index("caveat") > max(i for i, kind in enumerate(lead) if kind != "caveat" and kind in (
        "duplicate", "score", "match"))  # after what decided
    assert "caveat measured on" in details_markdown(r, {})


def test_nearest_examples_never_leave_an_empty_box():
    ev = evidence(row("dalle3", REASON_KNOWN))
    text = nearest_markdown(ev, pictures=0)
    assert "dalle3: 2023-10-04_0.jpeg (distance 0.00)" in text and "glid3_xl: 7.png, tile 2" in text
    assert "training images when they are on the server" in text and "ATTRIBUTION_DATA" in text
    assert "thumbnails of the images you enrolled" in text and "not kept" not in text
    assert "training images when they are on the server" not in nearest_markdown(ev, pictures=2)
    assert "none to show" in nearest_markdown(evidence({**row("dalle3", REASON_KNOWN), "nearest": []}), 0)
    enrolled = evidence({**row("mine", REASON_MATCH), "nearest": [{"label": "mine", "id": "", "distance": 0.5}]})
    assert "mine: an enrolled image (not kept) (distance 0.50)" in nearest_markdown(enrolled, 0)


def test_input_facts_and_the_sha256_are_in_the_details_not_the_verdict():
    r = row("dalle3", REASON_KNOWN)
    assert "5d5d" not in verdict_markdown(r, {}) and "JPEG" not in verdict_markdown(r, {})
    details = details_markdown(r, {})
    assert "| size | 640 x 480 px |" in details and "| pixel SHA-256 | " + "5d" * 32 in details


def test_a_too_small_image_is_not_judged_rather_than_unreadable():
    small = {"file": "icon.png", "error": "image too small to judge (40x40 px; the minimum is 64 px on the short "
                                          "side)", "error_code": "too_small"}
    broken = {"file": "notes.png", "error": "not a recognised image format", "error_code": "not_an_image"}
    assert verdict_markdown(small, {}).startswith("## Not judged: too small")
    assert "Could not read" not in verdict_markdown(small, {})
    assert verdict_markdown(broken, {}).startswith("## Could not read")
    summary = render.batch_summary([small, broken, row(REAL, REASON_REAL)], {})
    assert "not judged: too small: 1" in summary and "could not read: 1" in summary and "real: 1" in summary


def test_the_batch_table_says_why_in_words_and_the_csv_keeps_the_evidence():
    rows = [row(UNCERTAIN, REASON_UNCERTAIN), row("dalle3", REASON_EXACT, duplicate_of=EXACT,
                                                   caveat=caveat("dalle3", REASON_EXACT, METRICS)),
            row("dalle3", REASON_KNOWN)]
    header, values = render.batch_table(rows, {})
    assert header == ["file", "verdict", "probability", "synthetic score", "why"]
    assert values[0][-1].startswith("cannot tell: the synthetic score lies between") and "between_thresholds" not in \
        str(values)
    assert values[1][-1].startswith("This exact image")
    assert [v[2] for v in values] == ["", "", "63.7%"]  # the probability only where it decided
    header, _ = render.batch_table(rows[:2], {})
    assert header == ["file", "verdict", "synthetic score", "why"]  # and no empty column when none decided
    header, values = render.csv_table(rows)
    assert header[:4] == ["file", "label", "reason", "confidence"]  # machine-readable codes stay
    cells = dict(zip(header, values[1]))
    assert cells["duplicate_of"] == "exact: dalle3/2023-10-04_0.jpeg (dalle3)"
    assert cells["caveat"].startswith("The same decoded pixels") and cells["why"].startswith("This exact image")
