# The image of the exporter DaemonSet (docs/kubernetes-daemonset.yaml):
#   docker build -t registry.example.com/memwatcher:0.1.0 .
# The first stage builds the binary wheel (CO-RE objects, libbpf and libelf
# vendored: scripts/build-wheel.sh); the second holds Python and the wheel,
# nothing to compile with. BTF comes from the node (/sys/kernel/btf).
FROM debian:bookworm AS wheel
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libelf-dev zlib1g-dev \
      gcc make python3-dev python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python3 -m venv /build-venv \
 && /build-venv/bin/pip install -q --upgrade pip 'setuptools>=77' \
 && PYTHON=/build-venv/bin/python ./scripts/build-wheel.sh /wheelhouse

FROM debian:bookworm-slim
# libdw1: memleak's symbolizer (the exporter does not need it, `memwatcher memleak` in the pod does).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libdw1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/memwatcher \
 && /opt/memwatcher/bin/pip install --no-cache-dir /tmp/wheelhouse/memwatcher-*.whl \
 && rm -rf /tmp/wheelhouse
ENV PATH=/opt/memwatcher/bin:$PATH
EXPOSE 9464
ENTRYPOINT ["memwatcher"]
CMD ["export", "--listen", "0.0.0.0:9464"]
