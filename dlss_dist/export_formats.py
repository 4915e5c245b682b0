"""Ground floor: the names that make a file a dlss_dist export, shared by writers and readers.

The exporters (`dlss_dist.export`, `dlss_dist.exporters`) write these names and the serving
runtimes (`dlss_dist.serving`) read them; this module imports nothing, so the ONNX and TFLite
runtimes can know them without TensorFlow.
"""

FORMATS = ("savedmodel", "onnx", "tflite")

# Files inside an export version folder (``<export_root>/<version>/``).
SAVED_MODEL_FILE = "saved_model.pb"
ONNX_FILE = "model.onnx"
TFLITE_FILES = {"float32": "model.tflite", "float16": "model_fp16.tflite"}

# Tensor names of the ONNX and TFLite graphs: uint8 NHWC in, uint8 NHWC out.
INPUT_NAME = "images"
# Not "images" like the SavedModel's output key: ONNX needs distinct input and output names.
OUTPUT_NAME = "upscaled"

# ONNX model metadata keys.
ONNX_SCALE_KEY = "dlss_dist.scale"
ONNX_LAYOUT_KEY = "dlss_dist.layout"
ONNX_LAYOUTS = ("nhwc", "nchw")

# The TFLite model's one signature.
TFLITE_SIGNATURE_KEY = "serving_default"
