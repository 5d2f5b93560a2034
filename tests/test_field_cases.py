"""Real photos after ordinary handling never get a confident generator label from the shipped head: a 64 px crop,
a scanned text page, a 2x2 grid of one photo, a cartoon filter, a photo of a screen, a sharpened 2x upscale
(each built from photos that are not in the dev set: ``benchmarks/field_cases.py``)."""
import sys

import pytest

from attribution import Attributor
from attribution.constants import REAL, UNCERTAIN
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from field_cases import CASES, field_cases  # noqa: E402


@pytest.fixture(scope="module")
def verdicts():
    attributor = Attributor.from_pretrained()
    cases = field_cases()
    return {case: {name: out.label for name, out in zip(photos, attributor(list(photos.values())))}
            for case, photos in cases.items()}


@pytest.mark.parametrize("case", CASES)
def test_every_photo_of_the_case_is_real_or_uncertain(verdicts, case):
    assert len(verdicts[case]) >= 5
    wrong = {name: label for name, label in verdicts[case].items() if label not in (REAL, UNCERTAIN)}
    assert not wrong, f"{case}: {wrong}"
