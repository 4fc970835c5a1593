"""Run an exported causal-LM graph in onnxruntime as a :data:`conversion.verify_common.StepFn`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from conversion.onnx_wrapper import ATTENTION_MASK, INPUT_IDS, past_names


class OnnxCausalLM:
    """An onnxruntime session over a graph with the :mod:`conversion.onnx_wrapper` interface.

    ``step(input_ids (B, T), attention_mask (B, P+T), past | None) -> (logits (B, T, V), present)``;
    ``past=None`` feeds empty (B, n_kv, 0, head_dim) caches (prefill). Cache layout is read from the graph.
    """

    def __init__(self, path: Path, *, threads: int | None = None, spin: bool = False,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # Spinning worker threads keep cores busy between runs; interleaved with PyTorch (verification)
        # they starve it. Benchmarks of onnxruntime alone may turn spinning back on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        inputs = {i.name: i for i in self.session.get_inputs()}
        if INPUT_IDS not in inputs or ATTENTION_MASK not in inputs:
            raise ValueError(
                f"{path} has no {INPUT_IDS}/{ATTENTION_MASK} inputs: not a Distillery KV-cache graph"
            )
        self.num_layers = sum(1 for name in inputs if name.startswith("past_key_values."))
        if self.num_layers % 2 or not self.num_layers:
            raise ValueError(f"{path} has an incomplete past_key_values.* input set")
        self.num_layers //= 2
        self.past_names = past_names(self.num_layers)
        missing = [n for n in self.past_names if n not in inputs]
        if missing:
            raise ValueError(f"{path} lacks inputs {missing}")
        shape = inputs[self.past_names[0]].shape
        self.num_kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """2 * num_layers empty caches (batch, n_kv, 0, head_dim) float32."""
        return [np.zeros((batch, self.num_kv_heads, 0, self.head_dim), dtype=np.float32)
                for _ in self.past_names]

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray,
             past: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass; returns logits (B, T, V) and the flat present cache (B, n_kv, P+T, head_dim)."""
        if past is None:
            past = self.empty_past(input_ids.shape[0])
        if len(past) != len(self.past_names):
            raise ValueError(f"expected {len(self.past_names)} past tensors, got {len(past)}")
        feed = {INPUT_IDS: input_ids.astype(np.int64, copy=False),
                ATTENTION_MASK: attention_mask.astype(np.int64, copy=False)}
        feed.update(zip(self.past_names, past, strict=True))
        outputs = self.session.run(self.output_names, feed)
        return outputs[0], list(outputs[1:])

    __call__ = step
