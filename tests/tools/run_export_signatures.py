"""Runs both signatures of an export the two ways a server can, under whatever TensorFlow
runs this script; writes the results to an .npz. Used to check that an older TensorFlow
(the TF Serving release k8s/ pins) serves exports written by the training release.

  python run_export_signatures.py EXPORT_DIR INPUTS.npz OUTPUT.npz

INPUTS.npz holds `images` (uint8 [N,H,W,3]) and `png` (an object array of PNG bytes).
Needs TensorFlow only: no dlss_dist, as on a serving host.
"""

import sys

import numpy as np
import tensorflow as tf


def main(export_dir: str, inputs_path: str, output_path: str) -> None:
    inputs = np.load(inputs_path, allow_pickle=True)
    images, png = inputs["images"], list(inputs["png"])
    results = {"tf_version": np.array(tf.__version__)}

    # 1. The TF2 loader (what Python clients and tf.saved_model.load users do).
    loaded = tf.saved_model.load(export_dir)
    results["upscale"] = loaded.signatures["upscale"](images=tf.constant(images))["images"].numpy()
    served = loaded.signatures["serving_default"](image_bytes=tf.constant(png))["image_bytes"]
    results["serving_default"] = _decode(served.numpy())

    # 2. The graph/session loader, the way TF Serving's C++ SavedModelBundle runs a
    #    signature: MetaGraph tagged `serve`, feeds and fetches by the SignatureDef's names.
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        for name, key, feed in (
            ("upscale", "images", images),
            ("serving_default", "image_bytes", np.array(png, dtype=object)),
        ):
            signature = meta_graph.signature_def[name]
            results[f"session_{name}"] = session.run(
                signature.outputs[key].name, {signature.inputs[key].name: feed}
            )
    results["session_serving_default"] = _decode(results["session_serving_default"])
    np.savez(output_path, **results)


def _decode(png_batch) -> np.ndarray:
    return np.stack([tf.io.decode_png(data).numpy() for data in png_batch])


if __name__ == "__main__":
    main(*sys.argv[1:])
