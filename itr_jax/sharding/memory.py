"""Per-device memory of a compiled program, from XLA's memory analysis."""
from __future__ import annotations


def memory_stats(compiled) -> dict[str, int]:
  """Bytes per device of `compiled` (`jax.jit(f).lower(...).compile()`).

  For an SPMD program these are one device's figures: its shards of the
  arguments and outputs, and its temporaries.

  * arguments, outputs: the program's inputs and results on the device;
  * aliased: output bytes that reuse donated input buffers;
  * temp: scratch buffers live during the program;
  * peak: arguments + outputs - aliased + temp, an upper bound on what the
    step needs resident at once.
  """
  analysis = compiled.memory_analysis()
  if analysis is None:
    raise ValueError("This backend gives no memory analysis for compiled programs.")
  stats = {
      "arguments": int(analysis.argument_size_in_bytes),
      "outputs": int(analysis.output_size_in_bytes),
      "aliased": int(analysis.alias_size_in_bytes),
      "temp": int(analysis.temp_size_in_bytes),
  }
  stats["peak"] = (stats["arguments"] + stats["outputs"] - stats["aliased"]
                   + stats["temp"])
  return stats


def peak_bytes_per_device(compiled) -> int:
  """`memory_stats(compiled)["peak"]`.

  >>> import jax, jax.numpy as jnp
  >>> compiled = jax.jit(lambda x: x @ x.T).lower(jnp.ones((8, 4))).compile()
  >>> peak_bytes_per_device(compiled) >= (8 * 4 + 8 * 8) * 4
  True
  """
  return memory_stats(compiled)["peak"]
