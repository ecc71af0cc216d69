"""Medical-token-weighted dynamic masking: rates, weights, units, replacement, schedule, workers, resume, seeds.

Statistical checks use 4-sigma tolerances computed from the number of tokens (or units) in the sample.
"""

import math
from itertools import accumulate

import pytest
import torch
from conftest import tiny_config
from torch.utils.data import DataLoader
from transformers import ModernBertForMaskedLM, TrainingArguments

from clinical_modernbert.masking import (
    MaskingSchedule,
    MaskingScheduleCallback,
    MedicalMaskingCollator,
    placeholder_ids,
    unit_probabilities,
)
from clinical_modernbert.trainer import MLMTrainer

MAX_TERM = 3  # synthetic terms are 1..MAX_TERM tokens long


def rows(tokenizer, n_rows, length, medical_share=0.2, docs=4, seed=0):
    """Packed rows of random ordinary tokens: `docs` documents of `[CLS] ... [SEP]`, terms flagged 1, 2, 2."""
    g = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids) | set(placeholder_ids(tokenizer))  # never maskable
    vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    term_start = medical_share / ((1 + MAX_TERM) / 2)
    out = []
    for _ in range(n_rows):
        doc_lengths = [length // docs] * (docs - 1) + [length - (length // docs) * (docs - 1)]
        ids, flags = [], []
        for n in doc_lengths:
            body = vocab[torch.randint(len(vocab), (n - 2,), generator=g)].tolist()
            body_flags, k = [0] * (n - 2), 0
            starts, sizes = torch.rand(n - 2, generator=g).tolist(), torch.randint(1, MAX_TERM + 1, (n,), generator=g)
            while k < n - 2:
                if starts[k] < term_start:
                    size = min(int(sizes[k]), n - 2 - k)
                    body_flags[k : k + size] = [1] + [2] * (size - 1)
                    k += size
                else:
                    k += 1
            ids += [tokenizer.cls_token_id, *body, tokenizer.sep_token_id]
            flags += [0, *body_flags, 0]
        out.append({"input_ids": ids, "term_flags": flags, "doc_lengths": doc_lengths})
    return out


def collator(tokenizer, **kwargs):
    values = {"tokenizer": tokenizer, "seed": 0, "medical_weight": 3.0, "whole_term_masking": True}
    values.update(kwargs)
    return MedicalMaskingCollator(**values)


def terms(flags):
    """(row, start, end) of every flagged term (a 1 followed by 2s)."""
    found = []
    for b, row in enumerate(flags.tolist()):
        for i, f in enumerate(row):
            if f == 1:
                j = i + 1
                while j < len(row) and row[j] == 2:
                    j += 1
                found.append((b, i, j))
    return found


def flag_tensor(batch, examples):
    flags = torch.zeros_like(batch["labels"])
    for b, e in enumerate(examples):
        flags[b, : len(e["term_flags"])] = torch.tensor(e["term_flags"])
    return flags


def sd_bound(n_tokens, max_unit=MAX_TERM):
    """Upper bound on the sd of a masked fraction over units of at most `max_unit` tokens: q(1-q) <= 1/4."""
    return math.sqrt(max_unit * n_tokens / 4) / n_tokens


# -- schedule -----------------------------------------------------------------------------------------------------


def test_schedule_values_at_start_middle_end():
    # 101 steps: 0 .. 100, the last one (100) at exactly the end rate
    linear, cosine = MaskingSchedule(0.30, 0.15, 101), MaskingSchedule(0.30, 0.15, 101, "cosine")
    constant = MaskingSchedule(0.30, 0.15, 101, "constant")
    assert [linear(t) for t in (0, 50, 100, 500)] == pytest.approx([0.30, 0.225, 0.15, 0.15])
    assert [cosine(t) for t in (0, 25, 50, 100)] == pytest.approx(
        [0.30, 0.30 - 0.15 * (1 - math.cos(math.pi / 4)) / 2, 0.225, 0.15]
    )
    assert {constant(t) for t in (0, 50, 100)} == {0.30}


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"start": 0.0}, "mlm_probability_start must be in \\(0, 1\\)"),
    ({"start": 1.2}, "mlm_probability_start must be in \\(0, 1\\)"),
    ({"end": 1.0}, "mlm_probability_end must be in \\(0, 1\\)"),
    ({"end": -0.1}, "mlm_probability_end must be in \\(0, 1\\)"),
    ({"kind": "step"}, "mlm_schedule must be one of"),
])
def test_bad_schedule_fails_with_a_clear_error(kwargs, error):
    with pytest.raises(ValueError, match=error):
        MaskingSchedule(**kwargs)


def test_bad_collator_input_fails_with_a_clear_error(embedded_tokenizer):
    for weight in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="medical_weight must be a positive number"):
            collator(embedded_tokenizer, medical_weight=weight)
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        collator(embedded_tokenizer, mlm_probability=0.0)
    with pytest.raises(ValueError, match="PyTorch tensors only"):
        collator(embedded_tokenizer, return_tensors="np")
    no_mask = embedded_tokenizer.__class__.from_pretrained(embedded_tokenizer.name_or_path)
    no_mask.mask_token = None
    with pytest.raises(ValueError, match="has no mask token"):
        collator(no_mask)


# -- rates and weights --------------------------------------------------------------------------------------------


def test_realised_masked_fraction_follows_the_schedule(embedded_tokenizer):
    examples = rows(embedded_tokenizer, 16, 2048)
    c = collator(embedded_tokenizer, schedule=MaskingSchedule(0.30, 0.15, 100))
    for step in (0, 50, 100):
        c.batches.value = step
        maskable, _, masked, _ = c(examples)["mask_stats"].tolist()
        assert abs(masked / maskable - c.schedule(step)) < 4 * sd_bound(maskable), step


@pytest.mark.parametrize("whole_term", [False, True])
def test_medical_to_other_masking_rate_ratio_is_the_weight_when_uncapped(embedded_tokenizer, whole_term):
    examples = rows(embedded_tokenizer, 32, 2048, seed=1)
    p, w = 0.15, 3.0
    maskable, medical, masked, medical_masked = collator(
        embedded_tokenizer, mlm_probability=p, medical_weight=w, whole_term_masking=whole_term, seed=3
    )(examples)["mask_stats"].tolist()
    other, other_masked = maskable - medical, masked - medical_masked
    c = p * maskable / (w * medical + other)
    q_medical, q_other = w * c, c
    assert q_medical < 1  # uncapped
    ratio = (medical_masked / medical) / (other_masked / other)
    unit = MAX_TERM if whole_term else 1  # medical tokens come in units of up to MAX_TERM tokens
    sd_log = math.sqrt(unit * (1 - q_medical) / (q_medical * medical) + (1 - q_other) / (q_other * other))
    assert abs(math.log(ratio / w)) < 4 * sd_log, ratio
    assert abs(masked / maskable - p) < 4 * sd_bound(maskable, unit)


def test_capped_weights_mask_every_medical_token_and_keep_the_rate(embedded_tokenizer):
    examples = rows(embedded_tokenizer, 16, 2048, medical_share=0.25, seed=2)
    p = 0.30
    maskable, medical, masked, medical_masked = collator(
        embedded_tokenizer, mlm_probability=p, medical_weight=50.0
    )(examples)["mask_stats"].tolist()
    assert medical_masked == medical  # q = min(1, 50c) = 1 for every medical term
    other = maskable - medical
    expected_other_rate = (p * maskable - medical) / other  # the excess goes to the other tokens
    assert abs((masked - medical_masked) / other - expected_other_rate) < 4 * sd_bound(other, 1)
    assert abs(masked / maskable - p) < 4 * sd_bound(maskable, 1)


def test_unit_probabilities_hit_the_target_exactly():
    g = torch.Generator().manual_seed(0)
    size = torch.randint(1, 4, (400,), generator=g)
    weight = torch.where(torch.rand(400, generator=g) < 0.3, 8.0, 1.0)
    row = torch.arange(400) // 100
    n = torch.zeros(4, dtype=torch.float64).index_add_(0, row, size.double())
    target = torch.tensor([0.05, 0.15, 0.30, 0.60], dtype=torch.float64) * n
    q = unit_probabilities(size, weight, row, target)
    achieved = torch.zeros(4, dtype=torch.float64).index_add_(0, row, q * size)
    assert torch.allclose(achieved, target)
    assert bool(((q >= 0) & (q <= 1)).all())
    for r in range(4):
        in_row = row == r
        heavy, light = q[in_row & (weight == 8)], q[in_row & (weight == 1)]
        assert torch.allclose(light, light[0].expand_as(light))
        if heavy.max() < 1:  # uncapped: probabilities in proportion to the weights
            assert torch.allclose(heavy, 8 * light[0].expand_as(heavy))
        else:
            assert bool((heavy == 1).all()) and light[0] < 1
    assert q[row == 3].max() == 1 and q[row == 0].max() < 1  # both regimes occur


def test_replacement_split_follows_the_configured_probabilities(embedded_tokenizer):
    examples = rows(embedded_tokenizer, 16, 2048, seed=4)
    for replace, random in ((0.8, 0.1), (0.5, 0.3)):
        c = collator(embedded_tokenizer, mlm_probability=0.5, mask_replace_prob=replace, random_replace_prob=random,
                     whole_term_masking=False)
        batch = c(examples)
        original = torch.where(batch["labels"] != -100, batch["labels"], 0)
        masked = batch["labels"] != -100
        n = int(masked.sum())
        became_mask = int((masked & (batch["input_ids"] == embedded_tokenizer.mask_token_id)).sum())
        unchanged = int((masked & (batch["input_ids"] == original)).sum())
        for share, expected in ((became_mask / n, replace), (unchanged / n, 1 - replace - random),
                                ((n - became_mask - unchanged) / n, random)):
            assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-3
        ids = torch.tensor([e["input_ids"] for e in examples])
        assert torch.equal(batch["input_ids"][~masked], ids[~masked]) and torch.equal(original[masked], ids[masked])


# -- what may be masked, and as which units -----------------------------------------------------------------------


@pytest.mark.parametrize("units", [{}, {"whole_word_masking": True}, {"whole_term_masking": False}])
def test_special_and_padding_tokens_are_never_masked(embedded_tokenizer, units):
    examples = rows(embedded_tokenizer, 8, 512, seed=5)
    for k, e in enumerate(examples):  # ragged rows: padding
        cut = 512 - 13 * k
        e["input_ids"], e["term_flags"] = e["input_ids"][:cut], e["term_flags"][:cut]
        e["doc_lengths"] = e["doc_lengths"][:-1] + [cut - sum(e["doc_lengths"][:-1])]
    batch = collator(embedded_tokenizer, mlm_probability=0.9, pad_to_multiple_of=64, **units)(examples)
    ids = torch.full_like(batch["input_ids"], embedded_tokenizer.pad_token_id)
    for b, e in enumerate(examples):
        ids[b, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
    special = torch.isin(ids, torch.tensor(embedded_tokenizer.all_special_ids))
    assert batch["input_ids"].shape[1] % 64 == 0 and bool((ids[~batch["attention_mask"].bool()] ==
                                                            embedded_tokenizer.pad_token_id).all())
    assert bool((batch["labels"][special] == -100).all()) and bool((batch["input_ids"][special] == ids[special]).all())
    maskable, _, masked, _ = batch["mask_stats"].tolist()
    assert maskable == int((~special).sum()) and masked == int((batch["labels"] != -100).sum()) > 0


@pytest.mark.parametrize("whole_word", [False, True])
def test_whole_term_masking_never_masks_part_of_a_term(embedded_tokenizer, whole_word):
    examples = rows(embedded_tokenizer, 16, 1024, medical_share=0.4, seed=6)
    split_seen = False
    for whole_term in (True, False):
        batch = collator(embedded_tokenizer, mlm_probability=0.3, whole_term_masking=whole_term,
                         whole_word_masking=whole_word)(examples)
        masked = batch["labels"] != -100
        multi_token = [(b, i, j) for b, i, j in terms(flag_tensor(batch, examples)) if j - i > 1]
        counts = [int(masked[b, i:j].sum()) for b, i, j in multi_token]
        partial = any(0 < n < j - i for n, (_, i, j) in zip(counts, multi_token))
        if whole_term:
            assert not partial and sum(counts) > 0
        else:
            split_seen |= partial
    assert split_seen or whole_word  # without whole-term units, terms do get split (the check above has power)


def test_whole_word_masking_masks_words_as_units(embedded_tokenizer):
    text = ("The patient, a 67-year-old man with hypercholesterolemia and paroxysmal atrial fibrillation, "
            "was started on apixaban; echocardiography showed hypokinesis. ") * 40
    encoding = embedded_tokenizer(text)
    example = {"input_ids": encoding["input_ids"]}
    c = collator(embedded_tokenizer, mlm_probability=0.2, whole_word_masking=True, whole_term_masking=False)
    words = {}
    for position, word in enumerate(encoding.word_ids()):
        if word is not None:
            words.setdefault(word, []).append(position)
    multi = [p for p in words.values() if len(p) > 1 and text[encoding.token_to_chars(p[0]).start:
                                                               encoding.token_to_chars(p[-1]).end].strip().isalnum()]
    assert len(multi) > 100
    masked_tokens = 0
    for seed in range(5):
        c.seed, c.generator = seed, None
        masked = (c([example])["labels"][0] != -100).tolist()
        assert all(len({masked[p] for p in positions}) == 1 for positions in multi)
        masked_tokens += sum(masked)
    assert masked_tokens > 0


def test_parent_whole_word_flag_uses_vectorised_units_and_keeps_random_replacement(embedded_tokenizer):
    c = collator(embedded_tokenizer, whole_word_mask=True)
    assert c.whole_word_masking and not c.whole_word_mask and c.mask_replace_prob == 0.8
    batch = c([embedded_tokenizer("aspirin for atrial fibrillation")["input_ids"]])  # plain lists of ids work too
    assert set(batch) >= {"input_ids", "labels", "attention_mask", "medical_mask", "mask_stats"}


def test_batch_carries_medical_flags_and_packed_document_tensors(embedded_tokenizer):
    examples = rows(embedded_tokenizer, 4, 256, seed=7)
    examples[1] = {k: v[:200] if k != "doc_lengths" else [64, 64, 64, 8] for k, v in examples[1].items()}
    batch = collator(embedded_tokenizer, mlm_probability=0.15)(examples)
    flags = flag_tensor(batch, examples)
    assert batch["medical_mask"].dtype == torch.long and torch.equal(batch["medical_mask"], (flags > 0).long())
    assert batch["document_ids"][1, 200:].eq(-1).all() and batch["position_ids"][0, 64].item() == 0
    _, medical, masked, medical_masked = batch["mask_stats"].tolist()
    labelled = batch["labels"] != -100
    assert (masked, medical_masked) == (int(labelled.sum()), int((labelled & (flags > 0)).sum()))
    assert medical == int((flags > 0).sum())


# -- randomness ---------------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_masks(embedded_tokenizer):
    examples = rows(embedded_tokenizer, 4, 512, seed=8)
    schedule = MaskingSchedule(0.3, 0.15, 10)

    def run(seed):
        c = collator(embedded_tokenizer, schedule=schedule, seed=seed)
        return [c(examples)["input_ids"] for _ in range(3)]

    first, again, other = run(11), run(11), run(12)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # dynamic: the same rows are masked anew each time
    assert not any(torch.equal(a, b) for a, b in zip(first, other))


def eval_collator(tokenizer, seed=42):
    return collator(tokenizer, mlm_probability=0.15, seed=seed, medical_weight=1.0, whole_term_masking=False)


def per_document(examples, batch, keys=("input_ids", "labels", "mask_input")) -> dict:
    """Each document's (ids, masked inputs, labels, mask flags), keyed by its original ids, from a masked batch."""
    found = {}
    for r, e in enumerate(examples):
        start = 0
        for n in e["doc_lengths"]:
            found[tuple(e["input_ids"][start : start + n])] = tuple(
                batch[k][r, start : start + n].tolist() for k in keys)
            start += n
    return found


def repacked(examples, seed):
    """The same documents packed into rows in another order: other neighbours, other offsets, other row lengths."""
    docs = [(e["input_ids"][s : s + n], e["term_flags"][s : s + n])
            for e in examples for s, n in zip(accumulate([0] + e["doc_lengths"][:-1]), e["doc_lengths"])]
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    out = []
    for chunk in (order[i : i + 3] for i in range(0, len(order), 3)):
        out.append({"input_ids": [t for i in chunk for t in docs[i][0]],
                    "term_flags": [f for i in chunk for f in docs[i][1]],
                    "doc_lengths": [len(docs[i][0]) for i in chunk]})
    return out


def test_evaluation_masks_depend_only_on_seed_document_and_position(embedded_tokenizer):
    examples = rows(embedded_tokenizer, 16, 512, seed=9)
    c = eval_collator(embedded_tokenizer)
    whole = per_document(examples, c(examples))
    one_by_one = {}
    for e in examples:
        one_by_one |= per_document([e], c([e]))
    other = repacked(examples, seed=1)
    assert whole == one_by_one == per_document(other, c(other))
    assert whole == per_document(examples, eval_collator(embedded_tokenizer)(examples))  # a fresh collator
    assert whole != per_document(examples, eval_collator(embedded_tokenizer, seed=43)(examples))
    # a row without doc_lengths is one document
    single = {"input_ids": examples[0]["input_ids"][:128], "term_flags": examples[0]["term_flags"][:128]}
    assert torch.equal(c([single])["labels"], c([{**single, "doc_lengths": [128]}])["labels"])


def test_evaluation_masks_keep_the_rate_and_flag_mask_token_positions(embedded_tokenizer):
    examples = rows(embedded_tokenizer, 16, 2048, seed=13)
    c = eval_collator(embedded_tokenizer)
    batch = c(examples)
    maskable, _, masked, _ = batch["mask_stats"].tolist()
    assert abs(masked / maskable - 0.15) < 4 * sd_bound(maskable)
    labelled = batch["labels"] != -100
    is_mask = batch["input_ids"] == embedded_tokenizer.mask_token_id
    assert torch.equal(batch["mask_input"].bool(), labelled & is_mask)
    share = int(batch["mask_input"].sum()) / masked
    assert abs(share - c.mask_replace_prob) < 4 * math.sqrt(0.8 * 0.2 / masked)
    kept = int((labelled & (batch["input_ids"] == batch["labels"])).sum()) / masked
    assert abs(kept - 0.1) < 4 * math.sqrt(0.1 * 0.9 / masked) + 1 / len(embedded_tokenizer)


# -- the step reaches dataloader workers; the trainer drives and resumes the schedule -------------------------------


def test_dataloader_workers_count_batches_together(embedded_tokenizer):
    """Rates 0.9, 0.8, ... 0.1 over batches 0..8 (12 batches): each batch's realised rate tells which count it got."""
    c = collator(embedded_tokenizer, schedule=MaskingSchedule(0.9, 0.1, 9), whole_term_masking=False,
                 medical_weight=1.0)
    examples = rows(embedded_tokenizer, 48, 2048, seed=11)
    loader = DataLoader(examples, batch_size=4, num_workers=2, prefetch_factor=2, collate_fn=c,
                        multiprocessing_context="fork")
    seen = []
    for batch in loader:
        maskable, _, masked, _ = batch["mask_stats"].tolist()
        assert abs(masked / maskable - round(masked / maskable, 1)) < 4 * sd_bound(maskable, 1)
        seen.append(round((0.9 - masked / maskable) / 0.1))
    # the two workers share one counter: together they use each of the schedule's steps 0..8 once, then stay at the end
    assert sorted(seen) == list(range(9)) + [8, 8, 8], seen
    assert c.batches.value == 12


def test_trainer_drives_the_schedule_and_resume_continues_it(tmp_path, embedded_tokenizer):
    torch.manual_seed(0)
    examples = rows(embedded_tokenizer, 48, 64, docs=1, seed=12)
    schedule = MaskingSchedule(0.5, 0.1, 6)

    def train(resume=None):
        c = collator(embedded_tokenizer, schedule=schedule)
        used = []
        collate = c.torch_call
        c.torch_call = lambda batch: (used.append(c.current_probability), collate(batch))[1]
        args = TrainingArguments(
            output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, gradient_accumulation_steps=2,
            save_strategy="steps", save_steps=3, logging_steps=2, report_to="none", use_cpu=True,
            remove_unused_columns=False, dataloader_num_workers=0, learning_rate=1e-3, seed=0,
        )
        trainer = MLMTrainer(model=ModernBertForMaskedLM(tiny_config(embedded_tokenizer)), args=args,
                             train_dataset=examples, data_collator=c, callbacks=[MaskingScheduleCallback(c)])
        trainer.train(resume_from_checkpoint=resume)
        return used, trainer

    used, trainer = train()
    # micro-batch j belongs to optimizer step j // 2 and is masked at exactly that step's rate
    assert used[:12] == [schedule(j // 2) for j in range(12)]
    logged = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["mlm_probability"] for log in logged] == pytest.approx([schedule(s) for s in (1, 3, 5)], abs=1e-4)
    maskable, medical, masked, medical_masked = trainer.mask_totals.tolist()
    assert medical_masked / masked > 1.5 * medical / maskable  # weight 3: medical tokens over-represented
    assert all({"medical_share_maskable", "medical_share_masked", "masked_fraction"} <= set(log) for log in logged)

    resumed, _ = train(resume=str(tmp_path / "checkpoint-3"))
    assert resumed[0] == schedule(3)


NOTE = ("Name:  ___                     Unit No:   ___\nAdmission Date:  ___   Discharge Date:   ___\n"
        "Attending: ___.\nChief Complaint: abdominal pain; ___ of ___ was started on lactulose for ___.\n")


@pytest.mark.parametrize("which", ["embedded", "modernbert"])
def test_deidentification_placeholders_are_never_masked(embedded_tokenizer, which):
    """MIMIC's `___` carries no signal: over many draws at a 50% rate, no label ever falls on a token made only of
    underscores, while the other tokens are masked at about the rate."""
    from conftest import shared_path
    from transformers import AutoTokenizer

    from clinical_modernbert.masking import placeholder_ids

    tokenizer = embedded_tokenizer if which == "embedded" else AutoTokenizer.from_pretrained(
        shared_path("modernbert-tokenizer"))
    ids = tokenizer(NOTE * 8)["input_ids"]
    placeholders = torch.tensor(placeholder_ids(tokenizer))
    assert set(tokenizer.convert_ids_to_tokens(placeholders.tolist())) >= {"_"}
    # training masking: the rows of a batch are drawn independently (evaluation would mask equal rows alike)
    c = collator(tokenizer, schedule=MaskingSchedule(0.5, 0.5, 1, "constant"), whole_term_masking=False)
    row = torch.tensor(ids)
    is_placeholder = torch.isin(row, placeholders)
    other = ~is_placeholder & ~torch.isin(row, torch.tensor(tokenizer.all_special_ids))
    assert int(is_placeholder.sum()) >= 60
    labels = c([{"input_ids": ids}] * 200)["labels"]  # 200 rows: 200 independent draws
    assert not bool((labels[:, is_placeholder] != -100).any())
    labelled_other, n = int((labels[:, other] != -100).sum()), 200 * int(other.sum())
    assert abs(labelled_other / n - 0.5) < 4 * math.sqrt(0.25 / n)
