"""The patient's age, where known, and what it decides: is the film inside the model's intended use?

The intended use is children aged 1-5 (from the first birthday to the sixth). An age comes from the user
(`--age`, the page's field, the API's second argument) or from the DICOM header; it outranks the pixels, which
cannot tell an older child from another hospital's young one (population.py). Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INTENDED = (1.0, 6.0)  # years: [first birthday, sixth birthday)
ADULT = 18.0  # only a known age this high makes the page say "adult"
MAX_AGE = 120.0
DISAGREE = 1.0  # years between a declared age and the header's beyond which they contradict each other

ADULT_HEADLINE = "Adult film: this model was trained on children aged 1-5; its answer does not apply"
AGE_HEADLINE = "Outside the intended use (children aged 1-5): the model's answer does not apply"
CONFLICT_HEADLINE = "The declared age contradicts the DICOM header: no answer until the age is right"
UNLIKE_HEADLINE = "Outside the training population? This model was trained on children aged 1-5 from one hospital"
UNLIKE = ("it looks unlike the training children: an older patient's film, or another hospital's; if the patient is "
          "aged 1-5, give the age to have it assessed")
CAUTION = ("Films like this were not validated: it looks unlike the training children (one hospital), and it is "
           "assessed because the patient's age is {age}. Read the answer with care; calibrate the model to your "
           "site (pneumo calibrate).")


def parse_age(value) -> float | None:
    """A declared age in years (None or "" for unknown); a clear error for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        years = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the patient's age must be a number of years (e.g. 3 or 2.5), got '{value}'.") from None
    if not math.isfinite(years) or not 0 <= years <= MAX_AGE:
        raise ValueError(f"the patient's age must be between 0 and {MAX_AGE:.0f} years, got {value}.")
    return years


def years(age: float) -> str:
    """4.0 -> "4 years", 2.5 -> "2.5 years": the one way an age is written."""
    return f"{age:.1f}".removesuffix(".0") + (" year" if age == 1 else " years")


@dataclass(frozen=True)
class Answer:
    """What the age (or, without one, the pixels) says about the film's population."""

    reasons: tuple[str, ...] = ()  # why the film is outside the population; empty: inside
    cautions: tuple[str, ...] = ()  # said with an answer that applies
    age: float | None = None  # the age used
    source: str | None = None  # "declared", "dicom" or None
    headline: str | None = None  # the page's headline when outside

    @property
    def sentence(self) -> str:
        """The one plain sentence a result carries when the film is outside the population."""
        return f"{self.headline} ({'; '.join(self.reasons)})."


def decide(pixels_unlike: bool, declared: float | None = None, header: float | None = None) -> Answer:
    """The population answer from the pixel check's flag, a declared age and the DICOM header's age."""
    if declared is not None and header is not None and abs(declared - header) > DISAGREE:
        return Answer((f"the declared age is {years(declared)}, the DICOM header's {years(header)}",),
                      headline=CONFLICT_HEADLINE)
    age, source = (declared, "declared") if declared is not None else (header, "dicom" if header is not None else None)
    if age is None:
        return Answer((UNLIKE,), headline=UNLIKE_HEADLINE) if pixels_unlike else Answer()
    if not INTENDED[0] <= age < INTENDED[1]:
        given = "the declared age" if source == "declared" else "the DICOM header's age"
        return Answer((f"{given} is {years(age)}",), age=age, source=source,
                      headline=ADULT_HEADLINE if age >= ADULT else AGE_HEADLINE)
    return Answer(cautions=(CAUTION.format(age=years(age)),) if pixels_unlike else (), age=age, source=source)
