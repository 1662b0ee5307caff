# The Regulus API image (CPU). Model serving runs in its own container (see docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY ingest ingest
COPY retrieval retrieval
COPY generation generation
COPY api api
COPY eval eval
COPY corpora corpora
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps unstructured-inference==1.6.14
ENV HF_HUB_OFFLINE=1 UNSTRUCTURED_DISABLE_NOTICE=1 DO_NOT_TRACK=1 REGULUS_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["regulus", "serve", "--host", "0.0.0.0", "--port", "8000"]
