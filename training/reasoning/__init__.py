"""Reasoning students: latent reasoning (Coconut-style curriculum) and process supervision of steps.

:mod:`.latent_data` (latent-step examples), :mod:`.latent_model` (the student with latent thoughts),
:mod:`.latent_curriculum` (the staged curriculum and its trainer), :mod:`.step_data` (token spans of
reasoning steps, answers and tool calls; the step-annotated stream), :mod:`.process_losses` (per-step
weighted KD and CE), :mod:`.toolcall_supervision` (tool-call structure and validity).

Commands: ``python -m training.step_data`` (step-labelled data), ``python -m training.distill_process``
(a process-supervised KD run), ``python -m training.reasoning_pipeline`` (the reasoning ablation).
"""
