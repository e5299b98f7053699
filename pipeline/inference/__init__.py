"""Inference: `Recognizer`, `Synthesizer`, their options (torch-free), decoding, formats, VAD."""
