"""Knowledge-distillation training: the KD config, the trainer and what it runs on.

:mod:`.config` (the typed KD config; its ``teacher`` section comes from :mod:`training.teachers.config`),
:mod:`.trainer` (:class:`~training.kd.trainer.KDTrainer`: the training loop, hooks, resume, logs),
:mod:`.optim` (AdamW and the learning-rate schedule), :mod:`.data_adapter` (the data pipeline of
:mod:`training.data` wired to a KD config: training stream, validation batches, held-out examples),
:mod:`.evaluation` (loss, perplexity, generation and task accuracy), :mod:`.checkpoint` (resumable
training state), :mod:`.distributed` (``torchrun`` data parallel and FSDP helpers),
:mod:`.quant_qat_int8` (int8 quantization-aware training as a trainer hook).

The losses are in :mod:`training.losses`, the teachers in :mod:`training.teachers`; the command is
``python -m training.distill_kd``.
"""
