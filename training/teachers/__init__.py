"""Teachers: everything that produces teacher targets for KD, and the tools around them.

Interface and construction:
:mod:`.base` (:class:`~training.teachers.base.Teacher`, :class:`~training.teachers.base.TeacherTargets`,
the vocabulary check, helpers for sparse targets), :mod:`.config` (the ``teacher`` config section),
:mod:`.factory` (:func:`~training.teachers.factory.build_teacher` picks a source from that section).

Sources (chosen by ``teacher.kind``): a Distillery checkpoint (:mod:`.checkpoint_teacher`), a local
Hugging Face directory (:mod:`.hf`), an OpenAI-compatible HTTP endpoint (:mod:`.http_teacher` over
:mod:`.http_client` and :mod:`.response_cache`, with :mod:`.token_mapping` and :mod:`.teacher_tokenizer`),
and a precomputed top-k cache (:mod:`.cache_teacher` reads what :mod:`.cache_builder` writes in the
:mod:`.topk_storage` format; ``python -m training.teacher_cache``).

Tools: ``python -m training.teacher_server`` (:mod:`.server`, over :mod:`.local`) serves a local teacher
over the same OpenAI-compatible API; ``python -m training.teachers.generate`` (:mod:`.generate`) writes
teacher completions for sequence-level KD, which works across tokenizers. :mod:`.spec` turns a
``--teacher SPEC`` argument into a config section.

This file imports nothing: submodules are imported on use (the Hugging Face one pulls in
``transformers``), and the KD config can import :mod:`.config` without loading torch.
"""
