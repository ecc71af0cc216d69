"""Generator of the embedded sample corpus: PubMed-style abstracts and clinical notes, written from templates.

The text is synthetic (no patient data, no copyrighted abstracts): it fills templates with terms of the embedded
lexicon and codes of the embedded code tables, so the default run exercises the same medical-term machinery as a
real run. `recipes/build_embedded_assets.py` writes it to `assets/sample_corpus.jsonl.gz`.
"""

from __future__ import annotations

import random

from .assets import read_code_table, read_term_list

SEXES = ("man", "woman")
FREQUENCIES = ("once daily", "twice daily", "three times daily", "every 8 hours", "at bedtime", "as needed")
DOSES = (2.5, 5, 10, 20, 25, 40, 50, 81, 100, 250, 500, 1000)
DESIGNS = (
    "a randomized, double-blind, placebo-controlled trial",
    "a prospective cohort study",
    "a retrospective cohort study",
    "a multicenter observational study",
    "a case-control study",
    "a cross-sectional analysis",
    "a single-center pilot study",
)
OUTCOMES = (
    "all-cause mortality",
    "hospital readmission at 30 days",
    "length of stay",
    "serum creatinine",
    "blood pressure",
    "symptom burden",
    "quality of life",
    "recurrence",
    "major adverse cardiovascular events",
)
NOTE_SECTIONS = ("DISCHARGE SUMMARY", "CONSULTATION NOTE", "PROGRESS NOTE", "OPERATIVE NOTE", "HISTORY AND PHYSICAL")


class SampleCorpusGenerator:
    """Writes synthetic abstracts and notes; the same seed gives the same corpus."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.drugs = read_term_list("drugs")
        self.diseases = read_term_list("diseases")
        self.procedures = read_term_list("procedures")
        self.anatomy = read_term_list("anatomy")
        self.codes = {"ICD-9": read_code_table("icd9cm_sample.tsv"), "ICD-10": read_code_table("icd10cm_sample.tsv")}

    def pick(self, items):
        return self.rng.choice(items)

    def abstract(self) -> str:
        r, p = self.rng, self.pick
        disease, drug, other = p(self.diseases), p(self.drugs), p(self.drugs)
        n = r.randint(24, 2400)
        pval = r.choice(("0.001", "0.01", "0.02", "0.03", "0.04", "0.12", "0.35"))
        effect = r.choice(("reduced", "did not significantly change", "increased", "improved"))
        title = r.choice(
            (
                f"Efficacy of {drug} versus {other} in patients with {disease}.",
                f"{drug.capitalize()} and {p(OUTCOMES)} in {disease}: {p(DESIGNS)}.",
                f"Outcomes of {p(self.procedures)} in adults with {disease}.",
                f"Role of the {p(self.anatomy)} in {disease}.",
            )
        )
        sentences = [
            title,
            f"BACKGROUND: {disease.capitalize()} is associated with {p(self.diseases)} and increased {p(OUTCOMES)}.",
            f"The effect of {drug} on {p(OUTCOMES)} in this population is uncertain.",
            f"METHODS: We conducted {p(DESIGNS)} of {n} patients with {disease}.",
            f"Patients received {drug} {p(DOSES)} mg {p(FREQUENCIES)} or {other}, and underwent {p(self.procedures)}.",
            f"RESULTS: {drug.capitalize()} {effect} {p(OUTCOMES)} compared with {other} (p = {pval}).",
            f"Involvement of the {p(self.anatomy)} was observed in {r.randint(2, 60)}% of patients.",
            f"Adverse events included {p(self.diseases)} and {p(self.diseases)}.",
            f"CONCLUSIONS: In patients with {disease}, {drug} {effect} {p(OUTCOMES)}.",
        ]
        return " ".join(sentences)

    def note(self) -> str:
        r, p = self.rng, self.pick
        system = p(tuple(self.codes))
        code, description = p(self.codes[system])
        history = ", ".join(p(self.diseases) for _ in range(r.randint(2, 4)))
        meds = "\n".join(
            f"{i + 1}. {p(self.drugs)} {p(DOSES)} mg {p(FREQUENCIES)}." for i in range(r.randint(2, 6))
        )
        lines = [
            f"{p(NOTE_SECTIONS)}",
            f"CHIEF COMPLAINT: {p(self.diseases).capitalize()}.",
            f"HISTORY OF PRESENT ILLNESS: The patient is a {r.randint(19, 94)}-year-old {p(SEXES)} with a history of "
            f"{history} who presents with {p(self.diseases)} for {r.randint(1, 14)} days.",
            f"PHYSICAL EXAMINATION: Tenderness over the {p(self.anatomy)}. Heart rate {r.randint(52, 128)}, "
            f"blood pressure {r.randint(90, 180)}/{r.randint(50, 100)}, oxygen saturation {r.randint(86, 100)}%.",
            f"PROCEDURES: {p(self.procedures).capitalize()} and {p(self.procedures)}.",
            f"MEDICATIONS:\n{meds}",
            f"ASSESSMENT AND PLAN: {description} ({system} {code}). Continue {p(self.drugs)}; "
            f"follow up for {p(self.procedures)} in {r.randint(1, 12)} weeks.",
        ]
        return "\n".join(lines)

    def generate(self, n_abstracts: int, n_notes: int) -> list[dict]:
        """Documents in a fixed interleaved order, with `id`, `text` and `source` fields."""
        docs = [{"source": "pubmed", "text": self.abstract()} for _ in range(n_abstracts)]
        docs += [{"source": "clinical_note", "text": self.note()} for _ in range(n_notes)]
        self.rng.shuffle(docs)
        return [{"id": f"sample-{i:05d}", **doc} for i, doc in enumerate(docs)]
