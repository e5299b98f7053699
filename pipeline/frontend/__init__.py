"""Front-ends: audio I/O, log-mel features and the vocoder, text normalisation, flite phones,
subword and TTS units."""
