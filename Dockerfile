# One image for every step: dlss-preprocess, dlss-train, dlss-export, dlss-eval, dlss-upscale.
#
#   GPU (default): docker build -t dlss-dist:0.1.0 .
#   CPU:           docker build --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0 \
#                    -t dlss-dist:0.1.0-cpu .
#
# The base image is pinned to the TensorFlow release the code is tested with. It already
# ships `tensorflow` (with CUDA in the -gpu tag), so the package is installed WITHOUT its
# cpu/gpu extras: those would add a second TensorFlow distribution on top of the first.
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

# Logs reach `kubectl logs` as they are written, not when a buffer fills. The container is
# the environment, so installing into the image's own Python is the point
# (PIP_BREAK_SYSTEM_PACKAGES is a no-op where that Python is not marked externally managed).
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1

WORKDIR /app
COPY . /app

# Non-editable install: the code and its gin configs run from site-packages, so bare names
# (`--gin_file=base.gin`, gin `include 'base.gin'`) work from any working directory; the k8s
# ConfigMap mounted at /app/configs is named by path and wins. The checks fail the build if the
# install changed the base image's TensorFlow or a console script is missing.
RUN tf_version() { python3 -c "import tensorflow as tf; print(tf.__version__)" 2>/dev/null; } \
    && tf_before="$(tf_version)" && test -n "$tf_before" \
    && python3 -m pip install /app \
    && test "$(tf_version)" = "$tf_before" \
    && python3 -c "import os; os.chdir('/'); from dlss_dist import config; config.resolve_gin_file('base.gin')" \
    && python3 -c "import dlss_dist, beam_jobs" \
    && for script in dlss-preprocess dlss-train dlss-export dlss-eval dlss-upscale dlss-demo; do \
         command -v "$script" > /dev/null || { echo "missing console script $script" >&2; exit 1; }; \
       done

# No ENTRYPOINT: the command is the CLI to run, e.g.
#   docker run --rm dlss-dist:0.1.0 dlss-train --gin_file=demo.gin --model_dir=/tmp/m ...
CMD ["dlss-train", "--helpshort"]
