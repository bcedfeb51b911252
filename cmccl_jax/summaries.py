"""Images and texts for TensorBoard that every task shows: image grids with numbered captions; run starts."""

import os
import socket
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
  """uint8 [n, h, w, c] → one [rows·(h+2), cols·(w+2), c] grid (square by default), a black frame per image."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  cols = cols or int(np.ceil(np.sqrt(n)))
  rows = -(-n // cols)
  grid = np.zeros((rows * (h + 2), cols * (w + 2), c), np.uint8)
  for i, image in enumerate(images):
    r, q = divmod(i, cols)
    grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, q * (w + 2) + 1:q * (w + 2) + 1 + w] = image
  return grid


def grid_caption(i: int, cols: int, text: str) -> str:
  return f"{i} (row {i // cols}, col {i % cols}): `{text}`"


def write_input_examples(writer, step: int, batch: dict[str, np.ndarray], tokenizer, count: int = 16) -> None:
  """The first training images and captions as the model sees them (augmented, tokenized)."""
  images = np.asarray(batch["image"][:count])
  cols = int(np.ceil(np.sqrt(len(images))))
  captions = tokenizer.decode(np.asarray(batch["tokens"][:len(images)]))
  writer.write_images(step, {"train/augmented_examples": image_grid(images)[None]})
  writer.write_texts(step, {"train/augmented_captions": "\n\n".join(
      grid_caption(i, cols, text) for i, text in enumerate(captions))})


def write_run_start(logdir: str, step: int) -> str:
  """Marks in `logdir` that a run starts at `step`: TensorBoard then drops the points a killed run logged at
  `step` and after, which this run logs again (its "restart" purge, keyed on SessionLog.START).

  Call it before the run's summary writer exists: the marker's file name sorts before
  that writer's (same second, host and pid, ".start" < ".v2"), so TensorBoard reads it
  after the old run's points and before the new run's. Returns the file written.
  """
  now = time.time()
  path = os.path.join(logdir, f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.0.start")
  os.makedirs(logdir, exist_ok=True)
  with tf.io.TFRecordWriter(path) as f:
    f.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    start = event_pb2.Event(wall_time=now, step=int(step))
    start.session_log.status = event_pb2.SessionLog.START
    f.write(start.SerializeToString())
  return path
