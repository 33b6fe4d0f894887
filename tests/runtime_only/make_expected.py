"""Builds the artifacts the TensorFlow-free check compares against (main environment).

Run by ``.ci/tflite_runtime_check.sh`` with the main venv's Python (TensorFlow, Keras,
ai-edge-litert), before the runtime-only tests run in ``.venv-tflite``:

    python tests/runtime_only/make_expected.py OUT_DIR DATA_DIR

Writes into OUT_DIR:
- ``student.keras``: a random-weight ``mobilevitv2_050`` student, 64 px, scheme
  ``pair_51``, BatchNorm statistics fitted to real face crops (so its maps vary with
  the face, as a trained model's do);
- ``student_int8.tflite``: made by ``tools/convert.py`` (int8, calibrated on DATA_DIR);
- ``expected.npz``: for a few DATA_DIR faces (not calibration ones): ``image_paths``,
  ``boxes`` (tight landmark boxes), ``landmarks`` (``Landmarker.predict`` with
  ai-edge-litert) and ``raw_outputs`` (the int8 output tensors);
- ``predict_image.txt``: an image in which the default detector (BlazeFace) finds a face,
  and ``predict_expected.npy``: ``Landmarker.detect``'s first face on it (tools/predict.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_SIZE, SCHEME, NUM_FACES = 64, "pair_51", 16


def build_student(path: str, data_dir: str) -> None:
    """Saves the random-weight student with BatchNorm statistics fitted to real crops."""
    import keras

    import fld.models as models
    from fld.export import calibration

    keras.utils.set_random_seed(0)
    model = models.LandmarkDetector(preset="mobilevitv2_050", image_size=IMAGE_SIZE,
                                    scheme=SCHEME)
    records = calibration.read_calibration_records(data_dir, SCHEME)
    faces, _ = calibration.pick_calibration_faces(records, 16, 0)
    batch = np.concatenate(calibration.face_crops(faces, IMAGE_SIZE, progress=False))
    for _ in range(30):
        model(batch, training=True)
    model.save(path)


def main(out_dir: str, data_dir: str) -> None:
    from fld.export import calibration
    from fld.runtime import Landmarker

    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    keras_path = os.path.join(out_dir, "student.keras")
    tflite_path = os.path.join(out_dir, "student_int8.tflite")
    build_student(keras_path, data_dir)
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert.py"),
                    "--checkpoint", keras_path, "--quantize", "int8", "--calibration_dir",
                    data_dir, "--num_calibration", "64", "--num_check", "16",
                    "--output", tflite_path, "--noprogress"], check=True)

    landmarker = Landmarker(tflite_path, runtime="ai_edge_litert")
    records = calibration.read_calibration_records(data_dir, SCHEME)
    _, held_out = calibration.pick_calibration_faces(records, 64, NUM_FACES)
    paths, boxes, landmarks, raw = [], [], [], []
    for record in held_out:
        image = calibration.read_rgb(record.image_path)
        box = record.face_box
        inputs, _ = landmarker.crop(image, box)
        raw.append(landmarker.model.invoke_raw(landmarker.model.quantize_input(inputs)))
        landmarks.append(landmarker.predict(image, box))
        paths.append(os.path.abspath(record.image_path))
        boxes.append(box)
    np.savez(os.path.join(out_dir, "expected.npz"), image_paths=np.array(paths),
             boxes=np.stack(boxes), landmarks=np.stack(landmarks), raw_outputs=np.stack(raw))

    for record in held_out:  # an image where the default detector finds a face
        faces = landmarker.detect(calibration.read_rgb(record.image_path))
        if faces:
            with open(os.path.join(out_dir, "predict_image.txt"), "w") as f:
                f.write(os.path.abspath(record.image_path) + "\n")
            np.save(os.path.join(out_dir, "predict_expected.npy"), faces[0][1])
            break
    else:
        sys.exit("make_expected.py: the default detector found no face in the held-out images")
    print(f"make_expected.py: wrote {out_dir} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
