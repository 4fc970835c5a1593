"""Bundled prompt bank for distilling small instruction-following chat models (no downloads).

* :mod:`~training.prompt_bank.vocab`, :mod:`~training.prompt_bank.texts` -- hand-written slot values and
  short texts; :mod:`~training.prompt_bank.derived` -- slots computed together (numbers, item lists);
* :mod:`~training.prompt_bank.templates` -- the templates, by category;
* :mod:`~training.prompt_bank.generate` -- the deterministic bank (``build_bank``);
* :mod:`~training.prompt_bank.filters` -- exact/near duplicate, length and repetition filters;
* :mod:`~training.prompt_bank.manifest` -- lineage manifests written next to produced files;
* :mod:`~training.prompt_bank.records` -- prompts + teacher responses -> chat records, hash splits;
* :mod:`~training.prompt_bank.dataset` -- the filter pipeline from bank + responses to split files.

``python -m training.prompt_bank --out assets/prompts/prompts.jsonl`` regenerates the committed bank.
"""
