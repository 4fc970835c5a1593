"""Teacher sources behind the :class:`training.teachers.Teacher` interface, and the tools around them.

Sources (chosen by ``teacher.kind`` in a KD config, built by :func:`training.teachers.build_teacher`):
Distillery checkpoint (:class:`training.teachers.CheckpointTeacher`), local Hugging Face directory
(:mod:`.hf`), OpenAI-compatible HTTP endpoint (:mod:`.http_teacher` over :mod:`.http_client`), and a
precomputed top-k cache (:mod:`.cache_teacher`, written by :mod:`.cache_builder` /
``python -m training.teacher_cache``).

Tools: ``python -m training.teacher_server`` (:mod:`.server`) serves a local teacher over the same
OpenAI-compatible API; ``python -m training.teacher_sources.generate`` (:mod:`.generate`) writes teacher
completions for sequence-level KD, which works across tokenizers. :mod:`.spec` turns a ``--teacher SPEC``
argument into a config section.

Submodules are imported on use (the Hugging Face one pulls in ``transformers``).
"""
