"""The trajectory quality scorer (paper A.4): contrastively trained on kept vs rejected LVKC trajectories.

- ``negatives``: hard negatives made from kept trajectories, each saying how it was made;
- ``data``: positives, rejected and generated negatives as (question, trajectory) examples, split by record;
- ``model``: the encoder + head, checkpoints with a manifest, and ``LearnedScorer`` for the
  ``consistency`` reward (``scorer=medsage.plugins.scorer.model:LearnedScorer``);
- ``train``: the contrastive objective, per-kind AUROC / accuracy, ``run_train``;
- ``cli``: ``medsage scorer train|eval``.

Nothing here imports torch until a model is built.
"""
