"""The measured caveat of each kind of answer, and the model card that shows the same figures."""
from attribution.caveats import caveat
from attribution.constants import REAL, UNCERTAIN, UNKNOWN
from attribution.heads.card import headline_table, plain_summary
from attribution.heads.decision import REASON_EXACT, REASON_KNOWN, REASON_MATCH

METRICS = {"heldout_generator_flagged": 0.71, "heldout_generator_called_real": 0.08, "heldout_generator_uncertain": 0.21,
           "heldout_generator_known_label": 0.34, "heldout_real_kept_real": 0.93, "heldout_real_called_synthetic": 0.01,
           "heldout_real_uncertain": 0.06, "closed_set_acc": 0.91, "known_test_called_unknown": 0.04,
           "known_test_uncertain": 0.05,
           "per_unit": {"dalle3": {"flagged": 0.4, "called_real": 0.3, "uncertain": 0.3},
                        "flux1_dev": {"flagged": 0.9, "called_real": 0.05, "uncertain": 0.05},
                        "real/mei": {"kept_real": 0.8, "called_synthetic": 0.02, "uncertain": 0.18}}}


def test_each_kind_of_answer_gets_its_own_rates():
    assert caveat("dalle3", REASON_KNOWN, METRICS)["rates"] == {"heldout_generator_known_label": 0.34,
                                                                "closed_set_acc": 0.91}
    assert caveat(REAL, "no_synthetic_evidence", METRICS)["rates"] == {"heldout_generator_called_real": 0.08}
    assert caveat(UNKNOWN, "synthetic_unknown_generator", METRICS)["rates"] == {"known_test_called_unknown": 0.04}
    assert set(caveat(UNCERTAIN, "between_thresholds", METRICS)["rates"]) == {
        "heldout_generator_uncertain", "heldout_real_uncertain", "known_test_uncertain"}
    assert "34%" in caveat("dalle3", REASON_KNOWN, METRICS)["text"]


def test_changing_a_metric_changes_the_caveat():
    changed = {**METRICS, "heldout_generator_called_real": 0.27}
    assert caveat(REAL, "no_synthetic_evidence", METRICS)["text"] != caveat(REAL, "no_synthetic_evidence", changed)["text"]
    assert "27%" in caveat(REAL, "no_synthetic_evidence", changed)["text"]


def test_enrolled_classes_and_exact_images_have_caveats_of_their_own():
    enrolled = {"mine": {"n_images": 8, "expected_recall": 0.75, "expected_real_or_uncertain": 0.125}}
    out = caveat("mine", REASON_MATCH, METRICS, enrolled)
    assert out["rates"] == {"expected_recall": 0.75, "expected_real_or_uncertain": 0.125} and "8 images" in out["text"]
    assert caveat("dalle3", REASON_EXACT, METRICS)["rates"] == {}
    assert caveat("dalle3", REASON_KNOWN, {}) is None  # nothing measured: no caveat rather than a made-up one


def test_the_card_shows_the_headline_and_the_extremes():
    table = headline_table(METRICS)
    assert "71%" in table and "93%" in table and "| share |" in table
    summary = plain_summary(METRICS)
    assert "worst `dalle3` (40%" in summary and "best `flux1_dev` (90%" in summary and "`mei` (80% kept real)" in summary
