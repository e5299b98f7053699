"""Data: utterance manifests and batching, the synthetic corpus, feature caches, the word list."""
