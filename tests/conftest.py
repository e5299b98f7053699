"""Shared test settings."""

import torch

# Tiny models run fastest on one thread, and two intra-op threads on a busy two-core machine
# spend their time waiting for each other.
torch.set_num_threads(1)
