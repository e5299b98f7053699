"""The `speechq` commands that need no queue: corpus and training (`train`), local inference
(`inference`)."""
