"""BLEU-1..4, ROUGE-L and CIDEr with the `pycocoevalcap` scorers on PTB-style tokens (tokenizer.py)."""

from __future__ import annotations

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from .tokenizer import ptb_tokenize

LANGUAGE_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")


def tokenized(texts: list[str]) -> dict[int, list[str]]:
    return {index: [ptb_tokenize(text)] for index, text in enumerate(texts)}


def language_scores(answers: list[str], references: list[str]) -> dict[str, float]:
    """Corpus scores of answers against one reference each, keyed as the official scorer reports them."""
    if len(answers) != len(references):
        raise ValueError(f"language: {len(answers)} answers for {len(references)} references")
    # The official wrapper (language_evaluation.CocoEvaluator) renames '_UNK' in references.
    gts = tokenized([reference.replace("_UNK", "_UNKNOWN") for reference in references])
    res = tokenized(answers)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return dict(zip(LANGUAGE_KEYS, [*bleu, float(rouge), float(cider)], strict=True))
