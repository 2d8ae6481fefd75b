"""Knowledge distillation: a teacher's logits (:mod:`.logit`) or answers (:mod:`.teacher`) train a student.

The recipe that puts them together is :mod:`tuneforge.train.recipes.distill`; the smaller
student comes from ``model.keep_layers`` (:mod:`tuneforge.models.prune`).
"""
