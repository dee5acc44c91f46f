"""medsage.eval: benchmarks, inference backends, scoring, the GPT-score judge and reports.

- one file per benchmark (``vqa_rad``, ``slake``, ``pathvqa``, ``pmc_vqa``, ``mmmu_med``, ``omnimedvqa``,
  ``records_benchmark``) on the shared base in ``benchmark``; declared in ``medsage.benchmarks``;
- ``prompting`` (the recipe's LVKC prompt -> one chat request), ``backend`` (the interface) with
  ``hf_backend`` / ``vllm_backend`` / ``openai_backend``;
- ``run`` (``medsage eval run``: batched, resumable predictions), ``scoring`` (per-item verdicts and
  summaries through ``medsage.answers``), ``judge`` (GPT-score), ``report`` (``medsage report``),
  ``paper_numbers.yaml`` (the paper's Tables 1-5 as printed), ``cli`` (``medsage eval ...``).
"""
