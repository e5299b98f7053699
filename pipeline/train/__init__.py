"""Training: the shared loop (`loop`) and one module per recipe (ASR, NAT and AR TTS, LM)."""
