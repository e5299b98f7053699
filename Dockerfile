# The speechq image: workers, the gateway and the CLI (see docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends flite espeak-ng libsndfile1 ffmpeg \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY pipeline pipeline
COPY workers workers
RUN pip install --no-cache-dir .
ENV SPEECHQ_STORAGE=/data/storage SPEECHQ_CHECKPOINTS=/data/checkpoints
CMD ["speechq", "worker"]
